//! A hashed timing wheel: the deadline store behind stream timeouts and accept-retry back-offs.
//!
//! Pure bookkeeping: no clock reads, no syscalls, no locking of its own. The port owns its wheel
//! behind a lock (`src/port/timers.rs`); any thread may arm or disarm a timer, and whichever
//! thread polls epoll and gets the timerfd's event calls [`Wheel::poll_expired`] with the current
//! time. After either, [`Wheel::next_deadline`] says when the timerfd should fire next.
//!
//! Time is cut into ticks of `resolution` counted from `origin`; tick `t` starts at
//! `origin + t * resolution`. A deadline is rounded *up* to a tick, and a poll at `now` sweeps the
//! ticks up to `now` rounded *down*, so a timer never fires before its deadline and fires at most
//! one resolution late (relative to the poll times the caller picks).
//!
//! Entries live in a slab (`Vec` plus free list); each wheel slot is an intrusive doubly-linked
//! list threaded through the slab, so insert and remove are O(1). An entry keeps its absolute tick,
//! and slot `tick & (slots - 1)` holds entries of every revolution: a sweep fires only those whose
//! tick has come and leaves the later revolutions in place. A bitmap of non-empty slots lets both
//! the sweep and `next_deadline` skip empty slots a word at a time, and a per-slot lower bound of
//! the ticks filed there lets `next_deadline` look past slots holding only later revolutions.

use std::time::{Duration, Instant};

/// Default tick length.
pub(crate) const DEFAULT_RESOLUTION: Duration = Duration::from_millis(1);

/// Default number of slots; one revolution of the default wheel spans about a second.
pub(crate) const DEFAULT_SLOTS: usize = 1024;

/// Bits per occupancy word.
const WORD_BITS: usize = u64::BITS as usize;

/// Fewest slots: a whole occupancy word, so a word never straddles the wrap-around.
const MIN_SLOTS: usize = WORD_BITS;

/// Most slots; beyond this the bitmap scan stops being cheap.
const MAX_SLOTS: usize = 1 << 20;

/// Shortest tick.
const MIN_RESOLUTION: Duration = Duration::from_nanos(1);

/// Longest tick. Together with `MAX_SLOTS` and `HORIZON_NANOS` it keeps every tick start that
/// `next_deadline` computes within about 270 years of the origin, so it stays representable.
const MAX_RESOLUTION: Duration = Duration::from_secs(60 * 60);

/// How far past the origin (about 146 years) deadlines are tracked. Later deadlines are parked
/// and never fire; polls past it act as if made at the horizon. This bounds every tick number,
/// so tick arithmetic cannot overflow.
const HORIZON_NANOS: u64 = 1 << 62;

/// End of a list (slot, parked or free list).
const NIL: usize = usize::MAX;

/// Tick of a parked entry: one whose deadline is beyond the horizon.
const NEVER: u64 = u64::MAX;

/// Handle of one armed timer, returned by [`Wheel::insert`], taken by [`Wheel::remove`].
///
/// Carries the generation of its slab entry, so a stale id (already fired or removed, entry
/// reused since) is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerId {
    /// Index of the entry in the slab (u32 keeps the id, stored per stream, at 8 bytes).
    index: u32,
    /// Generation of the entry when the timer was armed.
    generation: u32,
}

/// One slab entry: an armed timer, or a link of the free list.
struct Entry<K> {
    /// `Some` exactly while the timer is armed.
    key: Option<K>,
    /// Absolute expiry tick (deadline rounded up), or `NEVER` while parked.
    tick: u64,
    /// Previous entry in the same list, `NIL` at the head.
    prev: usize,
    /// Next entry in the same list; while free, the next free entry.
    next: usize,
    /// Bumped every time the entry is released, which invalidates outstanding ids.
    generation: u32,
}

/// A hashed timing wheel of keys `K` ordered by deadline.
pub(crate) struct Wheel<K> {
    /// Instant of tick 0.
    origin: Instant,
    /// Tick length in nanoseconds, at least 1.
    resolution_nanos: u64,
    /// Last trackable tick (the horizon); armed ticks are `<= max_tick` or `NEVER`.
    max_tick: u64,
    /// `slots - 1`; the slot count is a power of two.
    mask: usize,
    /// Head entry of each slot's list.
    heads: Vec<usize>,
    /// Bit `s` set exactly when slot `s` is non-empty.
    occupied: Vec<u64>,
    /// Per slot, a lower bound of the ticks of its entries; `NEVER` exactly when it is empty.
    /// Invariant: a non-empty slot's bound is the tick of an entry filed in that slot, so it maps
    /// to that slot and is `>= cursor` (a sweep that moves the cursor past it walks the slot).
    /// Inserts and sweeps keep it exact; a remove may leave it stale-low until the slot empties
    /// or is next swept, which costs at most one early wake-up (whose poll sweeps the slot).
    slot_min: Vec<u64>,
    /// Head of the list of parked (never-firing) entries.
    parked: usize,
    /// The slab.
    entries: Vec<Entry<K>>,
    /// Head of the free list.
    free: usize,
    /// Number of armed timers, parked ones included.
    len: usize,
    /// First tick not yet swept. Invariant: every armed, unparked entry has `tick >= cursor`.
    cursor: u64,
    /// Tick of the latest effective poll (0 before any). `cursor` is `last_polled + 1`, or
    /// `last_polled` after an insert of an already-due deadline, which is filed at
    /// `last_polled` so that the next poll sweeps it.
    last_polled: u64,
}

impl<K: Copy> Wheel<K> {
    /// A wheel whose time zero is `origin`, with [`DEFAULT_RESOLUTION`] ticks and
    /// [`DEFAULT_SLOTS`] slots.
    pub(crate) fn new(origin: Instant) -> Self {
        Self::with_params(origin, DEFAULT_RESOLUTION, DEFAULT_SLOTS)
    }

    /// A wheel whose time zero is `origin`, with ticks of `resolution` and `slots` slots.
    ///
    /// Out-of-range values are clamped rather than refused: the resolution to 1 ns ..= 1 h, the
    /// slot count to 64 ..= 2^20 and then rounded up to a power of two.
    pub(crate) fn with_params(origin: Instant, resolution: Duration, slots: usize) -> Self {
        let resolution = resolution.clamp(MIN_RESOLUTION, MAX_RESOLUTION);
        // The clamp keeps it far below u64::MAX nanoseconds; the fallback is unreachable.
        let resolution_nanos = u64::try_from(resolution.as_nanos()).unwrap_or(u64::MAX);
        let slots = slots.clamp(MIN_SLOTS, MAX_SLOTS).next_power_of_two();
        Wheel {
            origin,
            resolution_nanos,
            max_tick: HORIZON_NANOS / resolution_nanos,
            mask: slots - 1,
            heads: vec![NIL; slots],
            occupied: vec![0; slots / WORD_BITS],
            slot_min: vec![NEVER; slots],
            parked: NIL,
            entries: Vec::new(),
            free: NIL,
            len: 0,
            cursor: 0,
            last_polled: 0,
        }
    }

    /// Arms `key` to expire at `deadline`; a deadline already swept past expires at the next
    /// poll. O(1) (amortised, for slab growth).
    pub(crate) fn insert(&mut self, deadline: Instant, key: K) -> TimerId {
        let mut tick = self.deadline_tick(deadline);
        if tick != NEVER && tick < self.cursor {
            // Its tick was already swept: file it at the last polled tick and step the cursor
            // back onto it. Instants are monotonic, so the next poll's tick is >= that one.
            tick = tick.max(self.last_polled);
            self.cursor = tick;
        }
        let index = self.alloc(key, tick);
        self.link(index);
        self.len += 1;
        TimerId { index: index as u32, generation: self.entries[index].generation }
    }

    /// Disarms; returns the key if the timer was still armed, `None` for a stale id. O(1).
    pub(crate) fn remove(&mut self, id: TimerId) -> Option<K> {
        let index = id.index as usize;
        let entry = self.entries.get(index)?;
        if entry.generation != id.generation || entry.key.is_none() {
            return None;
        }
        self.release(index)
    }

    /// Moves every key whose deadline is `<= now` into `out`, each exactly once, in no
    /// particular order.
    ///
    /// A deadline counts as reached once `now` reaches the start of the tick it rounds up to.
    /// Costs O(expired + occupied slots visited); a gap of a revolution or more costs a single
    /// sweep of the wheel, not one step per elapsed tick.
    pub(crate) fn poll_expired(&mut self, now: Instant, out: &mut Vec<K>) {
        let Some(now_tick) = self.now_tick(now) else {
            return; // Before the origin: nothing can be due.
        };
        if now_tick < self.cursor {
            return; // Everything up to `now_tick` has been swept already.
        }
        let slots = self.heads.len();
        let behind = now_tick - self.cursor;
        // Ticks `cursor..=now_tick` fall in `behind + 1` consecutive slots; once that covers
        // the whole wheel, one pass over every slot is enough.
        let (first, span) = match usize::try_from(behind) {
            Ok(behind) if behind < slots => (self.slot_of(self.cursor), behind + 1),
            _ => (0, slots),
        };
        let mut offset = 0;
        while let Some(found) = self.next_occupied(first + offset, span - offset) {
            let slot = (first + offset + found) & self.mask;
            self.expire_slot(slot, now_tick, out);
            offset += found + 1;
        }
        self.last_polled = now_tick;
        self.cursor = now_tick + 1;
    }

    /// The earliest instant at which `poll_expired` could return something; `None` when nothing
    /// that can ever fire is armed (parked deadlines beyond the horizon are ignored).
    ///
    /// This is the start of the earliest tick an armed timer is filed at: the earliest deadline
    /// rounded up to a tick (from which a poll fires it), or the last polled tick if a deadline
    /// already swept past was inserted since. It is earlier only when a remove left a slot's
    /// lower bound stale; the poll at that instant then sweeps the slot and refreshes the bound.
    /// It is never before the cursor, so polling at the returned instant always moves the cursor
    /// past it and following this never loops at one instant.
    ///
    /// Cost: a bitmap scan to the first non-empty slot from the cursor, which usually holds a
    /// timer of the coming revolution; if not, the slots' lower bounds are scanned on, a word of
    /// slots at a time, until one falls within it, over the whole wheel at worst.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let slots = self.heads.len();
        let first = self.slot_of(self.cursor);
        // Ticks `cursor..window_end` map one to one, in order, onto the slots in cyclic order
        // from `first`. So once the least bound over a run of slots from `first` lies in that
        // window, no later slot holds a smaller one. No overflow: `cursor <= max_tick + 1`.
        let window_end = self.cursor + slots as u64;
        // Common case: the first non-empty slot holds a timer of the coming revolution.
        let found = self.next_occupied(first, slots)?;
        let mut pos = (first + found) & self.mask;
        let mut earliest = self.slot_min[pos];
        if earliest >= window_end {
            // Least bound a word's worth of slots at a time, in cyclic order (empty slots are
            // `NEVER`, so there is no need to pick the occupied ones out).
            let mut left = slots - found;
            while left > 0 && earliest >= window_end {
                let len = (WORD_BITS - pos % WORD_BITS).min(left);
                // On the last lap the word also has the bits of slots already visited: at most
                // a needless `min_of`.
                if self.occupied[pos / WORD_BITS] >> (pos % WORD_BITS) != 0 {
                    earliest = earliest.min(min_of(&self.slot_min[pos..pos + len]));
                }
                left -= len;
                pos = (pos + len) & self.mask;
            }
        }
        debug_assert!(self.cursor <= earliest && earliest != NEVER);
        self.tick_instant(earliest)
    }

    /// Number of armed timers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    /// Whether no timer is armed.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tick a deadline rounds up to, or `NEVER` beyond the horizon. Deadlines before the origin
    /// round to tick 0.
    fn deadline_tick(&self, deadline: Instant) -> u64 {
        let nanos = deadline.saturating_duration_since(self.origin).as_nanos();
        let tick = nanos.div_ceil(u128::from(self.resolution_nanos));
        u64::try_from(tick).ok().filter(|&tick| tick <= self.max_tick).unwrap_or(NEVER)
    }

    /// Tick `now` rounds down to (saturating at the horizon), or `None` before the origin.
    fn now_tick(&self, now: Instant) -> Option<u64> {
        let nanos = now.checked_duration_since(self.origin)?.as_nanos();
        let tick = nanos / u128::from(self.resolution_nanos);
        Some(u64::try_from(tick).map_or(self.max_tick, |tick| tick.min(self.max_tick)))
    }

    /// Start instant of `tick`, `None` if not representable (not for ticks near the horizon,
    /// see `MAX_RESOLUTION`).
    fn tick_instant(&self, tick: u64) -> Option<Instant> {
        let nanos = u128::from(tick) * u128::from(self.resolution_nanos);
        let nanos = u64::try_from(nanos).ok()?;
        self.origin.checked_add(Duration::from_nanos(nanos))
    }

    /// Slot holding entries of `tick`.
    fn slot_of(&self, tick: u64) -> usize {
        // Truncating to usize keeps the low bits, which are all the mask needs.
        (tick as usize) & self.mask
    }

    /// Smallest `d < limit` such that slot `(start + d) & mask` is non-empty.
    fn next_occupied(&self, start: usize, limit: usize) -> Option<usize> {
        let mut distance = 0;
        while distance < limit {
            let slot = (start + distance) & self.mask;
            let bit = slot % WORD_BITS;
            // Words never straddle the wrap-around (slots is a multiple of WORD_BITS), so the
            // rest of this word is the next `WORD_BITS - bit` slots in order.
            let bits = self.occupied[slot / WORD_BITS] >> bit;
            if bits != 0 {
                let found = distance + bits.trailing_zeros() as usize;
                return (found < limit).then_some(found);
            }
            distance += WORD_BITS - bit;
        }
        None
    }

    /// Fires every entry of `slot` whose tick is `<= now_tick`, keeping later revolutions, and
    /// makes the slot's lower bound exact again.
    fn expire_slot(&mut self, slot: usize, now_tick: u64, out: &mut Vec<K>) {
        let mut index = self.heads[slot];
        let mut kept_min = NEVER;
        while index != NIL {
            let entry = &self.entries[index];
            let next = entry.next;
            if entry.tick <= now_tick {
                if let Some(key) = self.release(index) {
                    out.push(key);
                }
            } else {
                kept_min = kept_min.min(entry.tick);
            }
            index = next;
        }
        self.slot_min[slot] = kept_min;
    }

    /// Takes an entry off the free list (or grows the slab), unlinked.
    fn alloc(&mut self, key: K, tick: u64) -> usize {
        if self.free == NIL {
            self.entries.push(Entry { key: Some(key), tick, prev: NIL, next: NIL, generation: 0 });
            return self.entries.len() - 1;
        }
        let index = self.free;
        let entry = &mut self.entries[index];
        self.free = entry.next;
        entry.key = Some(key);
        entry.tick = tick;
        entry.prev = NIL;
        entry.next = NIL;
        index
    }

    /// Unlinks an armed entry, returns it to the free list and yields its key.
    fn release(&mut self, index: usize) -> Option<K> {
        self.unlink(index);
        let entry = &mut self.entries[index];
        let key = entry.key.take();
        entry.generation = entry.generation.wrapping_add(1);
        entry.next = self.free;
        self.free = index;
        self.len -= 1;
        key
    }

    /// List an entry of `tick` belongs to: `Some(slot)`, or `None` for the parked list.
    fn list_of(&self, tick: u64) -> Option<usize> {
        (tick != NEVER).then(|| self.slot_of(tick))
    }

    /// Head of a list.
    fn head(&self, list: Option<usize>) -> usize {
        match list {
            Some(slot) => self.heads[slot],
            None => self.parked,
        }
    }

    /// Sets the head of a list, keeping the occupancy bit in step with it (and resetting the
    /// lower bound of a slot that empties).
    fn set_head(&mut self, list: Option<usize>, index: usize) {
        let Some(slot) = list else {
            self.parked = index;
            return;
        };
        self.heads[slot] = index;
        let bit = 1u64 << (slot % WORD_BITS);
        if index == NIL {
            self.occupied[slot / WORD_BITS] &= !bit;
            self.slot_min[slot] = NEVER;
        } else {
            self.occupied[slot / WORD_BITS] |= bit;
        }
    }

    /// Pushes an unlinked entry onto the front of the list of its tick, lowering the slot's
    /// bound to it.
    fn link(&mut self, index: usize) {
        let tick = self.entries[index].tick;
        let list = self.list_of(tick);
        if let Some(slot) = list {
            self.slot_min[slot] = self.slot_min[slot].min(tick);
        }
        let old_head = self.head(list);
        self.entries[index].prev = NIL;
        self.entries[index].next = old_head;
        if old_head != NIL {
            self.entries[old_head].prev = index;
        }
        self.set_head(list, index);
    }

    /// Takes a linked entry out of its list.
    fn unlink(&mut self, index: usize) {
        let Entry { prev, next, tick, .. } = self.entries[index];
        if prev == NIL {
            self.set_head(self.list_of(tick), next);
        } else {
            self.entries[prev].next = next;
        }
        if next != NIL {
            self.entries[next].prev = prev;
        }
        self.entries[index].prev = NIL;
        self.entries[index].next = NIL;
    }
}

/// Least of `bounds`, `NEVER` when empty; four running minima keep the dependency chains short.
fn min_of(bounds: &[u64]) -> u64 {
    let mut lanes = [NEVER; 4];
    let mut chunks = bounds.chunks_exact(4);
    for chunk in &mut chunks {
        for (lane, &bound) in lanes.iter_mut().zip(chunk) {
            *lane = (*lane).min(bound);
        }
    }
    let lanes = lanes[0].min(lanes[1]).min(lanes[2].min(lanes[3]));
    chunks.remainder().iter().fold(lanes, |least, &bound| least.min(bound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const SMALL_SLOTS: usize = 64;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn poll(wheel: &mut Wheel<u64>, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        wheel.poll_expired(now, &mut out);
        out.sort_unstable();
        out
    }

    /// Checks the lists, the occupancy bitmap and the per-slot lower bounds against each other.
    fn check_invariants<K: Copy>(wheel: &Wheel<K>) {
        for slot in 0..wheel.heads.len() {
            let mut index = wheel.heads[slot];
            let mut min = NEVER;
            while index != NIL {
                let entry = &wheel.entries[index];
                assert!(entry.key.is_some());
                assert_eq!(wheel.slot_of(entry.tick), slot);
                assert!(entry.tick >= wheel.cursor, "entry behind the cursor");
                min = min.min(entry.tick);
                index = entry.next;
            }
            let occupied = (wheel.occupied[slot / WORD_BITS] >> (slot % WORD_BITS)) & 1 == 1;
            assert_eq!(occupied, min != NEVER, "occupancy bit of slot {slot}");
            let bound = wheel.slot_min[slot];
            if min == NEVER {
                assert_eq!(bound, NEVER, "bound of empty slot {slot}");
            } else {
                assert!(bound <= min, "bound of slot {slot} above its minimum");
                assert!(bound >= wheel.cursor, "bound of slot {slot} behind the cursor");
                assert_eq!(wheel.slot_of(bound), slot);
            }
        }
    }

    /// Tiny xorshift64 PRNG, so the randomized test needs no extra crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn fires_in_deadline_order() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        wheel.insert(origin + ms(30), 0);
        wheel.insert(origin + ms(10), 1);
        wheel.insert(origin + ms(20), 2);
        assert_eq!(wheel.len(), 3);
        assert!(poll(&mut wheel, origin + ms(9)).is_empty());
        assert_eq!(poll(&mut wheel, origin + ms(10)), [1]);
        assert_eq!(poll(&mut wheel, origin + ms(25)), [2]);
        assert_eq!(poll(&mut wheel, origin + ms(30)), [0]);
        assert!(wheel.is_empty());
        assert!(poll(&mut wheel, origin + ms(1000)).is_empty());
    }

    #[test]
    fn never_fires_early() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let deadline = origin + ms(10) + Duration::from_nanos(1);
        wheel.insert(deadline, 7);
        assert!(poll(&mut wheel, origin + ms(10)).is_empty());
        assert!(poll(&mut wheel, deadline).is_empty(), "rounds up to the next tick");
        assert!(poll(&mut wheel, origin + ms(11) - Duration::from_nanos(1)).is_empty());
        assert_eq!(poll(&mut wheel, origin + ms(11)), [7]);

        // Sub-tick deadlines and polls: whatever fires has a deadline <= now.
        let mut wheel = Wheel::new(origin);
        let step = Duration::from_micros(137);
        let deadlines: Vec<Instant> = (1..200u32).map(|i| origin + step * i).collect();
        for (key, &deadline) in deadlines.iter().enumerate() {
            wheel.insert(deadline, key as u64);
        }
        let mut fired = 0;
        for i in 0..400u32 {
            let now = origin + Duration::from_micros(91) * i;
            for key in poll(&mut wheel, now) {
                assert!(deadlines[key as usize] <= now);
                fired += 1;
            }
        }
        assert_eq!(fired, deadlines.len());
    }

    #[test]
    fn remove_before_fire() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let id = wheel.insert(origin + ms(5), 1);
        wheel.insert(origin + ms(5), 2);
        assert_eq!(wheel.remove(id), Some(1));
        assert_eq!(wheel.len(), 1);
        assert_eq!(poll(&mut wheel, origin + ms(100)), [2]);
        assert!(poll(&mut wheel, origin + ms(2000)).is_empty());
    }

    #[test]
    fn stale_ids_are_refused() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let fired = wheel.insert(origin + ms(1), 1);
        assert_eq!(poll(&mut wheel, origin + ms(1)), [1]);
        assert_eq!(wheel.remove(fired), None);

        let removed = wheel.insert(origin + ms(50), 2);
        assert_eq!(wheel.remove(removed), Some(2));
        assert_eq!(wheel.remove(removed), None);
        assert!(wheel.is_empty());
    }

    #[test]
    fn reused_entry_is_not_removed_by_stale_id() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let old = wheel.insert(origin + ms(5), 1);
        assert_eq!(wheel.remove(old), Some(1));
        let new = wheel.insert(origin + ms(5), 2);
        assert_eq!(new.index, old.index, "the entry is reused");
        assert_ne!(new, old);
        assert_eq!(wheel.remove(old), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(poll(&mut wheel, origin + ms(5)), [2]);
        assert_eq!(wheel.remove(new), None);
    }

    #[test]
    fn far_future_fires_at_its_revolution() {
        let origin = Instant::now();
        let mut wheel = Wheel::with_params(origin, ms(1), SMALL_SLOTS);
        let far = SMALL_SLOTS as u64 * 5 + 7;
        wheel.insert(origin + ms(far), 9);
        wheel.insert(origin + ms(7), 1); // Same slot, first revolution.
        for t in 0..far {
            let fired = poll(&mut wheel, origin + ms(t));
            if t == 7 {
                assert_eq!(fired, [1]);
            } else {
                assert!(fired.is_empty(), "fired early at {t} ms");
            }
        }
        assert_eq!(poll(&mut wheel, origin + ms(far)), [9]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn following_next_deadline_makes_progress() {
        let origin = Instant::now();
        let mut wheel = Wheel::with_params(origin, ms(1), SMALL_SLOTS);
        let far = SMALL_SLOTS as u64 * 10 + 3;
        wheel.insert(origin + ms(far), 4);
        let mut last = None;
        let mut wakeups = 0;
        let fired = loop {
            let next = wheel.next_deadline().expect("armed");
            assert!(next <= origin + ms(far));
            if let Some(last) = last {
                assert!(next > last, "next_deadline did not advance");
            }
            last = Some(next);
            wakeups += 1;
            let fired = poll(&mut wheel, next);
            if !fired.is_empty() {
                break (fired, next);
            }
        };
        assert_eq!(fired, (vec![4], origin + ms(far)));
        assert_eq!(wakeups, 1, "no wake-up before the deadline");
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn jump_far_ahead_fires_everything_once() {
        let origin = Instant::now();
        let mut wheel = Wheel::with_params(origin, ms(1), SMALL_SLOTS);
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let count = 1000;
        for key in 0..count {
            wheel.insert(origin + ms(rng.below(10_000)), key);
        }
        let fired = poll(&mut wheel, origin + Duration::from_secs(3600));
        assert_eq!(fired, (0..count).collect::<Vec<_>>());
        assert!(wheel.is_empty());
        assert!(poll(&mut wheel, origin + Duration::from_secs(7200)).is_empty());
    }

    #[test]
    fn next_deadline_bounds() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        assert_eq!(wheel.next_deadline(), None);

        let late = wheel.insert(origin + ms(40), 1);
        let early = wheel.insert(origin + ms(25), 2);
        assert_eq!(wheel.next_deadline(), Some(origin + ms(25)));
        assert_eq!(wheel.remove(early), Some(2));
        assert_eq!(wheel.next_deadline(), Some(origin + ms(40)));

        // Off-tick deadline: the deadline rounded up to its tick.
        let odd = wheel.insert(origin + ms(3) + Duration::from_micros(300), 3);
        assert_eq!(wheel.next_deadline(), Some(origin + ms(4)));
        assert_eq!(wheel.remove(odd), Some(3));
        assert_eq!(wheel.remove(late), Some(1));
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn past_deadline_fires_at_next_poll() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let now = origin + ms(500);
        assert!(poll(&mut wheel, now).is_empty());
        wheel.insert(origin + ms(100), 1);
        wheel.insert(now, 2);
        assert_eq!(wheel.next_deadline(), Some(now), "filed at the last polled tick");
        assert_eq!(poll(&mut wheel, now), [1, 2]);
        assert!(wheel.next_deadline().is_none());
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let origin = Instant::now() + Duration::from_secs(10);
        let mut wheel = Wheel::with_params(origin, Duration::ZERO, 0);
        assert_eq!(wheel.heads.len(), MIN_SLOTS);
        let mut wheel_big = Wheel::<u64>::with_params(origin, Duration::MAX, usize::MAX);
        assert_eq!(wheel_big.heads.len(), MAX_SLOTS);
        wheel_big.insert(origin + ms(1), 1);
        assert!(wheel_big.next_deadline().is_some());
        assert_eq!(poll(&mut wheel_big, origin + MAX_RESOLUTION), [1]);
        let mut wheel_odd = Wheel::<u64>::with_params(origin, ms(1), 100);
        assert_eq!(wheel_odd.heads.len(), 128);
        wheel_odd.insert(origin + ms(300), 1);
        assert_eq!(poll(&mut wheel_odd, origin + ms(300)), [1]);

        // Before the origin: deadlines round to tick 0; polls fire nothing.
        let before = origin - Duration::from_secs(5);
        wheel.insert(before, 1);
        assert!(poll(&mut wheel, before).is_empty());
        assert_eq!(poll(&mut wheel, origin), [1]);

        // Beyond the horizon: parked, never fires, still removable.
        let huge = origin + Duration::from_secs(u64::MAX / 4);
        let parked = wheel.insert(huge, 2);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.next_deadline(), None);
        assert!(poll(&mut wheel, origin + Duration::from_secs(1 << 40)).is_empty());
        assert_eq!(wheel.remove(parked), Some(2));
        assert!(wheel.is_empty());

        // A poll far beyond the horizon fires what is tracked and keeps working.
        wheel.insert(origin + ms(3), 3);
        assert_eq!(poll(&mut wheel, huge), [3]);
        wheel.insert(origin + ms(4), 4);
        assert_eq!(poll(&mut wheel, huge), [4]);
    }

    #[test]
    fn hundred_thousand_timers() {
        const COUNT: u64 = 100_000;
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let ids: Vec<TimerId> = (0..COUNT).map(|key| wheel.insert(origin + ms(rng.below(60_000)), key)).collect();
        assert_eq!(wheel.len(), COUNT as usize);
        for (key, &id) in ids.iter().enumerate().step_by(2) {
            assert_eq!(wheel.remove(id), Some(key as u64));
        }
        assert_eq!(wheel.len(), COUNT as usize / 2);
        let mut fired = Vec::new();
        let mut now = origin;
        while let Some(next) = wheel.next_deadline() {
            now = now.max(next);
            wheel.poll_expired(now, &mut fired);
        }
        assert!(now <= origin + ms(60_000));
        fired.sort_unstable();
        let expected: Vec<u64> = (0..COUNT).filter(|key| key % 2 == 1).collect();
        assert_eq!(fired, expected);
        assert!(wheel.is_empty());
    }

    /// Ticks the model expects: deadlines round up, polls round down.
    fn model_run(seed: u64, resolution: Duration, slots: usize, ops: usize) {
        let origin = Instant::now() + Duration::from_secs(1);
        let res = resolution.as_nanos();
        let up = |t: Instant| t.saturating_duration_since(origin).as_nanos().div_ceil(res);
        let down = |t: Instant| t.saturating_duration_since(origin).as_nanos() / res;
        let revolution = resolution * slots as u32;
        let revolution_nanos = revolution.as_nanos() as u64;

        let mut wheel = Wheel::with_params(origin, resolution, slots);
        let mut rng = XorShift(seed);
        // Armed timers by (deadline tick, key).
        let mut model: BTreeMap<(u128, u64), Instant> = BTreeMap::new();
        // Armed timers as (key, id, model tick, tick the wheel files it at).
        let mut live: Vec<(u64, TimerId, u128, u128)> = Vec::new();
        // Ticks of removed timers whose slot has not been swept since: a slot's lower bound may
        // still be one of them.
        let mut stale: BTreeSet<u128> = BTreeSet::new();
        let mut dead: Vec<TimerId> = Vec::new();
        let mut now = origin;
        let mut next_key = 0u64;
        let mut total_fired = 0;

        for _ in 0..ops {
            match rng.below(10) {
                0..=4 => {
                    let offset = Duration::from_nanos(rng.below(4 * revolution_nanos));
                    let deadline = match rng.below(8) {
                        0 => now.checked_sub(offset).unwrap_or(now),
                        1 => now,
                        _ => now + offset,
                    };
                    let key = next_key;
                    next_key += 1;
                    let id = wheel.insert(deadline, key);
                    model.insert((up(deadline), key), deadline);
                    // A deadline already swept past is filed at the last polled tick, which is
                    // `down(now)` (0 before the first poll).
                    live.push((key, id, up(deadline), up(deadline).max(down(now))));
                }
                5 | 6 => {
                    if !live.is_empty() && rng.below(4) != 0 {
                        let (key, id, tick, filed) = live.swap_remove(rng.below(live.len() as u64) as usize);
                        assert_eq!(wheel.remove(id), Some(key));
                        assert!(model.remove(&(tick, key)).is_some());
                        stale.insert(filed);
                        dead.push(id);
                    } else if !dead.is_empty() {
                        let id = dead[rng.below(dead.len() as u64) as usize];
                        assert_eq!(wheel.remove(id), None);
                    }
                }
                _ => {
                    now += match rng.below(6) {
                        0 => Duration::ZERO,
                        1 => Duration::from_nanos(rng.below(revolution_nanos * 3)),
                        _ => Duration::from_nanos(rng.below(revolution_nanos / 8)),
                    };
                    let fired = poll(&mut wheel, now);
                    let due: Vec<(u128, u64)> = model.range(..(down(now) + 1, 0)).map(|(&k, _)| k).collect();
                    let mut expected: Vec<u64> = due.iter().map(|&(_, key)| key).collect();
                    expected.sort_unstable();
                    assert_eq!(fired, expected, "at {:?}", now - origin);
                    for entry in &due {
                        assert!(model.remove(entry).expect("due") <= now);
                    }
                    let fired_set: BTreeSet<u64> = fired.iter().copied().collect();
                    // The poll swept every slot of the ticks up to `down(now)`.
                    stale.retain(|&tick| tick > down(now));
                    live.retain(|&(key, id, _, _)| {
                        let gone = fired_set.contains(&key);
                        if gone {
                            dead.push(id);
                        }
                        !gone
                    });
                    total_fired += fired.len();
                }
            }
            assert_eq!(wheel.len(), model.len());
            check_invariants(&wheel);
            match model.keys().next() {
                None => assert_eq!(wheel.next_deadline(), None),
                Some(&(tick, _)) => {
                    // The earliest filed tick: the earliest deadline's, or the last polled one
                    // when a deadline swept past is pending.
                    let expected = tick.max(down(now));
                    let next = wheel.next_deadline().expect("armed");
                    let next_tick = down(next);
                    assert_eq!(next, origin + Duration::from_nanos((next_tick * res) as u64), "not a tick start");
                    assert!(
                        next_tick == expected || (next_tick < expected && stale.contains(&next_tick)),
                        "next_deadline at tick {next_tick}, expected {expected} (stale: {stale:?})"
                    );
                }
            }
        }
        assert!(total_fired > ops / 20, "the test exercised firing");
    }

    /// Keys `0..1000` an hour out, at `HOUR + 3 ms + 7 ms * key`: 1000 distinct slots of the
    /// default wheel (7 is odd, so invertible modulo 1024), none within the first revolution.
    fn arm_far(wheel: &mut Wheel<u64>, origin: Instant) -> Instant {
        const HOUR: Duration = Duration::from_secs(3600);
        for key in 0..1000 {
            wheel.insert(origin + HOUR + ms(3 + 7 * key), key);
        }
        origin + HOUR + ms(3)
    }

    #[test]
    fn far_timers_do_not_wake_early() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let earliest = arm_far(&mut wheel, origin);
        assert_eq!(wheel.occupied.iter().map(|word| word.count_ones()).sum::<u32>(), 1000);
        assert_eq!(wheel.next_deadline(), Some(earliest));
        assert!(poll(&mut wheel, origin + ms(500)).is_empty());
        assert_eq!(wheel.next_deadline(), Some(earliest));
        assert!(poll(&mut wheel, origin + Duration::from_secs(10)).is_empty());
        assert_eq!(wheel.next_deadline(), Some(earliest));

        // Following next_deadline wakes exactly once per timer, each time for the next one.
        let mut wakeups = 0;
        while let Some(next) = wheel.next_deadline() {
            assert_eq!(poll(&mut wheel, next), [wakeups], "spurious or late wake-up");
            wakeups += 1;
        }
        assert_eq!(wakeups, 1000);
        assert!(wheel.is_empty());
    }

    #[test]
    fn removing_the_near_timer_moves_next_deadline_out() {
        let origin = Instant::now();
        for shared in [false, true] {
            let mut wheel = Wheel::new(origin);
            let far = arm_far(&mut wheel, origin);
            // A near tick whose slot is free of, or shared with, far timers.
            let near_tick = (1..DEFAULT_SLOTS).find(|&tick| (wheel.heads[tick] != NIL) == shared).expect("slot");
            let near = origin + ms(near_tick as u64);
            let id = wheel.insert(near, 1000);
            assert_eq!(wheel.next_deadline(), Some(near));
            assert_eq!(wheel.remove(id), Some(1000));
            if shared {
                // The slot's bound stays stale until a sweep: one early wake-up, then out.
                assert_eq!(wheel.next_deadline(), Some(near));
                assert!(poll(&mut wheel, near).is_empty());
            }
            assert_eq!(wheel.next_deadline(), Some(far), "shared slot: {shared}");
            check_invariants(&wheel);
        }
    }

    /// Prints the cost of `next_deadline` with 100,000 armed (meaningful with `--release`):
    /// deadlines spread over the next minute, and all of them an hour or more out (every slot
    /// occupied, none within the coming revolution: the full walk).
    #[test]
    fn next_deadline_cost_with_100k_armed() {
        const COUNT: u64 = 100_000;
        const CALLS: u32 = 20_000;
        let origin = Instant::now();
        for (label, base) in [("spread over a minute", Duration::ZERO), ("all an hour out", Duration::from_secs(3600))]
        {
            let mut wheel = Wheel::new(origin);
            let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
            let mut earliest = None::<Instant>;
            for key in 0..COUNT {
                let deadline = origin + base + ms(1 + rng.below(60_000));
                earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                wheel.insert(deadline, key);
            }
            assert!(poll(&mut wheel, origin).is_empty());
            assert_eq!(wheel.next_deadline(), earliest);
            let start = Instant::now();
            for _ in 0..CALLS {
                std::hint::black_box(std::hint::black_box(&wheel).next_deadline());
            }
            let per_call = start.elapsed().as_nanos() / u128::from(CALLS);
            println!("next_deadline, {COUNT} armed, {label}: {per_call} ns per call");
        }
    }

    #[test]
    fn randomized_against_model() {
        model_run(0x1234_5678_9abc_def1, ms(1), SMALL_SLOTS, 20_000);
        model_run(0xdead_beef_cafe_f00d, ms(1), DEFAULT_SLOTS, 20_000);
        model_run(0x0bad_c0de_1357_9bdf, Duration::from_micros(10), 128, 20_000);
    }
}
