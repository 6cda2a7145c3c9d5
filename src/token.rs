//! Stream tokens: slot index plus generation, so an event or timer that names a slot which was
//! freed and reused (even by a stream with the same fd number) is recognised as stale.

use std::fmt;

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
    /// The epoll `data` value. The top bit is never set, which keeps the reserved tokens
    /// (stop, timer) near `u64::MAX` apart from every stream.
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

/// The port's table of streams: slot -> (generation, occupant), with a free list.
pub(crate) struct Slab<T> {
    entries: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

impl<T: Clone> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab { entries: Vec::new(), free: Vec::new(), len: 0 }
    }

    /// Reserves a slot for `make(token)` and returns the token.
    pub(crate) fn insert_with(&mut self, make: impl FnOnce(Token) -> T) -> Token {
        let token = match self.free.pop() {
            Some(slot) => {
                let e = &mut self.entries[slot as usize];
                e.0 = Token::next_gen(e.0);
                Token { slot, gen: e.0 }
            }
            None => {
                self.entries.push((0, None));
                Token { slot: (self.entries.len() - 1) as u32, gen: 0 }
            }
        };
        self.entries[token.slot as usize].1 = Some(make(token));
        self.len += 1;
        token
    }

    /// The occupant of `token`'s slot if it is still that generation.
    pub(crate) fn get(&self, token: Token) -> Option<T> {
        #[cfg(loom)]
        if crate::sync::planted("no_generation") {
            // Planted bug: find the slot's occupant whatever its generation.
            return self.entries.get(token.slot as usize).and_then(|(_, v)| v.clone());
        }
        match self.entries.get(token.slot as usize) {
            Some((gen, Some(v))) if *gen == token.gen => Some(v.clone()),
            _ => None,
        }
    }

    /// Frees `token`'s slot if it is still that generation.
    pub(crate) fn remove(&mut self, token: Token) -> Option<T> {
        match self.entries.get_mut(token.slot as usize) {
            Some((gen, v @ Some(_))) if *gen == token.gen => {
                let out = v.take();
                self.free.push(token.slot);
                self.len -= 1;
                out
            }
            _ => None,
        }
    }

    /// Every occupant.
    pub(crate) fn values(&self) -> Vec<T> {
        self.entries.iter().filter_map(|(_, v)| v.clone()).collect()
    }

    /// Empties the table, returning the occupants.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        let out = self.values();
        self.entries.clear();
        self.free.clear();
        self.len = 0;
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.len
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
        let mut s = Slab::new();
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
}
