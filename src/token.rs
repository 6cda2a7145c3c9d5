//! Stream tokens: slot index plus generation, so an event or timer that names a slot which was
//! freed and reused (even by a stream with the same fd number) is recognised as stale.

use std::fmt;

use crate::sync::{lock, Mutex};

/// Where a stream lives in the port's table, and which occupant of that slot it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Token {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

/// Generations count up to this and wrap; with one wrap per 2^31 reuses of one slot, a stale
/// event would have to sleep through two billion assigns of the same slot to be mistaken.
const GEN_MASK: u32 = u32::MAX >> 1;

impl Token {
    /// The epoll `data` value. The top bit is never set, which keeps the reserved tokens near
    /// `u64::MAX` (`STOP_TOKEN`, `TIMER_TOKEN` and `POKE_TOKEN` in `src/sys/mod.rs`: the stop
    /// eventfd, the timerfd and the poke eventfd) apart from every stream.
    pub(crate) fn to_u64(self) -> u64 {
        (u64::from(self.gen & GEN_MASK) << 32) | u64::from(self.slot)
    }

    /// The inverse of [`Token::to_u64`]; `None` for a reserved value.
    pub(crate) fn from_u64(v: u64) -> Option<Token> {
        if v >> 63 != 0 {
            return None;
        }
        Some(Token { slot: v as u32, gen: (v >> 32) as u32 })
    }

    /// The generation that follows `gen` in a reused slot.
    pub(crate) fn next_gen(gen: u32) -> u32 {
        gen.wrapping_add(1) & GEN_MASK
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}v{}", self.slot, self.gen)
    }
}

/// Slots in the first segment of a [`Table`]; segment `k` holds `SEGMENT_BASE << k`.
const SEGMENT_BASE: usize = 64;
/// Segments at most: 64 * (2^26 - 1) slots, more than any fd table holds.
#[cfg(not(loom))]
const SEGMENTS: usize = 26;

/// One slot of the table: its generation and occupant, under a lock of its own, so a lookup
/// contends only with changes to that one stream.
struct Slot<T> {
    cell: Mutex<(u32, Option<T>)>,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Slot { cell: Mutex::new((0, None)) }
    }
}

fn new_segment<T>(k: usize) -> Box<[Slot<T>]> {
    (0..SEGMENT_BASE << k).map(|_| Slot::new()).collect()
}

/// Where slot `i` lives: (segment, index in it).
fn locate(i: usize) -> (usize, usize) {
    let k = (i / SEGMENT_BASE + 1).ilog2() as usize;
    (k, i - SEGMENT_BASE * ((1 << k) - 1))
}

/// The bookkeeping of insertions and removals (not touched by lookups).
struct Meta {
    /// Slots handed out so far (the next new slot's index).
    used: usize,
    free: Vec<u32>,
    len: usize,
}

/// The port's table of streams: slot -> (generation, occupant), with a free list.
///
/// A lookup ([`Table::get`], once per epoll event and timer) takes no port-wide lock: the
/// segments never move once made, and each slot has its own lock. Insertions and removals
/// (assign, close, deassign) share one lock for the free list.
pub(crate) struct Table<T> {
    #[cfg(not(loom))]
    segments: [std::sync::OnceLock<Box<[Slot<T>]>>; SEGMENTS],
    /// Under loom one fixed segment: the models assign a handful of streams.
    #[cfg(loom)]
    segments: Box<[Slot<T>]>,
    meta: Mutex<Meta>,
}

impl<T: Clone> Table<T> {
    pub(crate) fn new() -> Self {
        Table {
            #[cfg(not(loom))]
            segments: std::array::from_fn(|_| std::sync::OnceLock::new()),
            #[cfg(loom)]
            segments: new_segment(0),
            meta: Mutex::new(Meta { used: 0, free: Vec::new(), len: 0 }),
        }
    }

    #[cfg(not(loom))]
    fn slot(&self, i: usize) -> Option<&Slot<T>> {
        let (k, at) = locate(i);
        self.segments.get(k)?.get()?.get(at)
    }

    #[cfg(loom)]
    fn slot(&self, i: usize) -> Option<&Slot<T>> {
        let (k, at) = locate(i);
        if k == 0 {
            self.segments.get(at)
        } else {
            None
        }
    }

    #[cfg(not(loom))]
    fn make_slot(&self, i: usize) -> &Slot<T> {
        let (k, at) = locate(i);
        &self.segments[k].get_or_init(|| new_segment(k))[at]
    }

    #[cfg(loom)]
    fn make_slot(&self, i: usize) -> &Slot<T> {
        self.slot(i).expect("the loom models assign at most one segment of streams")
    }

    /// Reserves a slot for `make(token)` and returns the token.
    pub(crate) fn insert_with(&self, make: impl FnOnce(Token) -> T) -> Token {
        let mut meta = lock(&self.meta);
        let (i, reused) = match meta.free.pop() {
            Some(i) => (i as usize, true),
            None => {
                meta.used += 1;
                (meta.used - 1, false)
            }
        };
        meta.len += 1;
        let slot = self.make_slot(i);
        let mut cell = lock(&slot.cell);
        // A reused slot gets the next generation, so tokens of its earlier occupants miss.
        let gen = if reused { Token::next_gen(cell.0) } else { cell.0 };
        let token = Token { slot: i as u32, gen };
        *cell = (gen, Some(make(token)));
        token
    }

    /// The occupant of `token`'s slot if it is still that generation.
    pub(crate) fn get(&self, token: Token) -> Option<T> {
        let cell = lock(&self.slot(token.slot as usize)?.cell);
        #[cfg(loom)]
        if crate::sync::planted("no_generation") {
            // Planted bug: find the slot's occupant whatever its generation.
            return cell.1.clone();
        }
        match &*cell {
            (gen, Some(v)) if *gen == token.gen => Some(v.clone()),
            _ => None,
        }
    }

    /// Frees `token`'s slot if it is still that generation.
    pub(crate) fn remove(&self, token: Token) -> Option<T> {
        let mut meta = lock(&self.meta);
        let slot = self.slot(token.slot as usize)?;
        let mut cell = lock(&slot.cell);
        if cell.0 != token.gen || cell.1.is_none() {
            return None;
        }
        let out = cell.1.take();
        drop(cell);
        meta.free.push(token.slot);
        meta.len -= 1;
        out
    }

    /// Every occupant.
    pub(crate) fn values(&self) -> Vec<T> {
        let used = lock(&self.meta).used;
        (0..used).filter_map(|i| self.slot(i).and_then(|s| lock(&s.cell).1.clone())).collect()
    }

    /// Empties the table, returning the occupants.
    pub(crate) fn drain(&self) -> Vec<T> {
        let mut meta = lock(&self.meta);
        let mut out = Vec::with_capacity(meta.len);
        for i in 0..meta.used {
            if let Some(s) = self.slot(i) {
                let mut cell = lock(&s.cell);
                if let Some(v) = cell.1.take() {
                    out.push(v);
                    meta.free.push(i as u32);
                }
            }
        }
        meta.len = 0;
        out
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.meta).len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_reserved() {
        let t = Token { slot: 7, gen: 3 };
        assert_eq!(Token::from_u64(t.to_u64()), Some(t));
        assert_eq!(Token::from_u64(u64::MAX), None);
        assert_eq!(Token::from_u64(u64::MAX - 1), None);
        assert_eq!(Token::next_gen(GEN_MASK), 0);
    }

    #[test]
    fn reused_slot_refuses_stale_token() {
        let s = Table::new();
        let a = s.insert_with(|_| "a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert_with(|_| "b");
        assert_eq!(a.slot, b.slot);
        assert_ne!(a, b);
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some("b"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn segments_grow_and_keep_their_slots() {
        let s = Table::new();
        let tokens: Vec<Token> = (0..1000).map(|i| s.insert_with(|_| i)).collect();
        assert_eq!(s.len(), 1000);
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(s.get(*t), Some(i));
        }
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert_eq!(locate(192), (2, 0));
        let mut all = s.drain();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(s.len(), 0);
        assert_eq!(s.get(tokens[5]), None);
    }
}
