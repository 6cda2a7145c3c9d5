//! The keyspace: byte-string keys to byte-string values, each with an optional expiry, split
//! into shards that each have their own lock, so that connections served by different threads
//! rarely wait for one another.
//!
//! Expiry is lazy, as in Redis: an expired key stays in memory until something touches it
//! (a read, a write, `EXISTS`, `DBSIZE`...), which then removes it and treats it as absent.
//! Redis also expires keys in the background; this store does not (see [`Store::len`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::protocol::{parse_i64, push_i64};

/// The keyspace, shared by every connection (behind an `Arc`).
#[derive(Debug)]
pub struct Store {
    shards: Box<[PaddedShard]>,
}

/// A shard's lock and map header on cache lines of their own, so that threads working on
/// neighbouring shards do not slow each other down (false sharing). 128 bytes: the adjacent
/// line prefetcher of x86 fetches lines in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedShard(Mutex<Shard>);

/// One shard: a plain map, plus how many of its entries have an expiry (so that counting the
/// live keys of a shard where nothing expires costs nothing).
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry>,
    volatile: usize,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    /// False once the expiry has passed. Reads the clock only for keys that have one.
    fn is_live(&self) -> bool {
        self.expires.is_none_or(|at| at > Instant::now())
    }
}

/// Which expiry `SET` leaves on the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetExpiry {
    /// None (plain `SET`): the value lives until deleted.
    Clear,
    /// The key's current expiry, if it has one (`KEEPTTL`).
    Keep,
    /// This deadline (`EX`, `PX`).
    At(Instant),
}

/// When `SET` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    /// Always.
    Always,
    /// Only if the key does not exist (`NX`).
    IfAbsent,
    /// Only if the key exists (`XX`).
    IfPresent,
}

/// When `EXPIRE` applies; the flags may be combined as Redis allows (`NX` with neither of the
/// others, `GT` or `LT` with `XX`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireCondition {
    /// Only if the key has no expiry.
    pub nx: bool,
    /// Only if the key has an expiry.
    pub xx: bool,
    /// Only if the new expiry is later than the current one (no expiry counts as infinite).
    pub gt: bool,
    /// Only if the new expiry is earlier than the current one (no expiry counts as infinite).
    pub lt: bool,
}

/// The time to live of a key, as `TTL` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// No such key.
    Missing,
    /// The key never expires.
    Persistent,
    /// The key expires in this long.
    Remaining(Duration),
}

/// Why `INCRBY` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrError {
    /// The value is not a decimal i64.
    NotInteger,
    /// The result would not fit in an i64.
    Overflow,
}

impl Store {
    /// An empty store with `shards` shards (at least one). A few times the number of threads
    /// serving connections keeps lock contention low.
    pub fn new(shards: usize) -> Store {
        Store { shards: (0..shards.max(1)).map(|_| PaddedShard::default()).collect() }
    }

    /// The number of live keys (`DBSIZE`). Removes the expired ones it finds, so this walks
    /// every shard that has keys with an expiry.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(&shard.0).purge_expired()).sum()
    }

    /// Whether no live key is left (walks the shards as [`Store::len`] does).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of live keys that have an expiry (`INFO keyspace`).
    pub fn volatile_len(&self) -> usize {
        self.shards.iter().map(|shard| lock(&shard.0).volatile).sum()
    }

    /// Removes every key (`FLUSHALL`), giving the memory back.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let old = std::mem::take(&mut *lock(&shard.0));
            drop(old); // outside the lock
        }
    }

    /// Calls `f` with the value of `key`, or `None` if it has none, under the shard's lock (so
    /// the value can be written out without a copy).
    pub fn get<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let mut shard = self.shard(key);
        match shard.map.get(key) {
            None => return f(None),
            Some(entry) if entry.is_live() => return f(Some(&entry.value)),
            Some(_) => {}
        }
        shard.remove(key); // expired
        f(None)
    }

    /// True if `key` exists.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key, |value| value.is_some())
    }

    /// `SET`: stores `value` under `key` if `condition` allows, with the expiry `expiry` says.
    /// Calls `old` once, under the lock, with the value the key had before (for `SET ... GET`).
    /// Returns whether it wrote.
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        expiry: SetExpiry,
        condition: SetCondition,
        old: impl FnOnce(Option<&[u8]>),
    ) -> bool {
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        match shard.map.get_mut(key) {
            Some(entry) => {
                let live = entry.is_live();
                old(if live { Some(&entry.value) } else { None });
                if !condition_allows(condition, live) {
                    return false;
                }
                overwrite(&mut entry.value, value);
                let expires = match expiry {
                    SetExpiry::Clear => None,
                    SetExpiry::Keep if live => entry.expires,
                    SetExpiry::Keep => None,
                    SetExpiry::At(at) => Some(at),
                };
                set_expiry(&mut shard.volatile, entry, expires);
            }
            None => {
                old(None);
                if !condition_allows(condition, false) {
                    return false;
                }
                let expires = match expiry {
                    SetExpiry::At(at) => Some(at),
                    SetExpiry::Clear | SetExpiry::Keep => None,
                };
                shard.volatile += usize::from(expires.is_some());
                shard.map.insert(key.into(), Entry { value: value.to_vec(), expires });
            }
        }
        true
    }

    /// Deletes `key`; returns whether it existed.
    pub fn remove(&self, key: &[u8]) -> bool {
        self.shard(key).remove(key).is_some_and(|entry| entry.is_live())
    }

    /// `INCRBY`: adds `delta` to the decimal i64 stored at `key` (0 if there is none), keeping
    /// the key's expiry, and returns the result.
    pub fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        match shard.map.get_mut(key) {
            Some(entry) => {
                let current = if entry.is_live() {
                    parse_i64(&entry.value).ok_or(IncrError::NotInteger)?
                } else {
                    set_expiry(&mut shard.volatile, entry, None); // expired: start again from 0
                    0
                };
                let new = current.checked_add(delta).ok_or(IncrError::Overflow)?;
                entry.value.clear();
                push_i64(&mut entry.value, new);
                Ok(new)
            }
            None => {
                let mut value = Vec::with_capacity(20);
                push_i64(&mut value, delta);
                shard.map.insert(key.into(), Entry { value, expires: None });
                Ok(delta)
            }
        }
    }

    /// The time to live of `key`.
    pub fn ttl(&self, key: &[u8]) -> Ttl {
        let mut shard = self.shard(key);
        let Some(entry) = shard.map.get(key) else { return Ttl::Missing };
        match entry.expires {
            None => Ttl::Persistent,
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ttl::Remaining(left),
                _ => {
                    shard.remove(key);
                    Ttl::Missing
                }
            },
        }
    }

    /// `EXPIRE`: makes `key` expire at `at` if `condition` allows; a deadline that has already
    /// passed deletes the key. Returns whether the key exists and the condition allowed it.
    pub fn expire(&self, key: &[u8], at: Instant, condition: ExpireCondition) -> bool {
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        let Some(entry) = shard.map.get_mut(key) else { return false };
        if !entry.is_live() {
            shard.remove(key);
            return false;
        }
        let current = entry.expires;
        let refused = (condition.nx && current.is_some())
            || (condition.xx && current.is_none())
            || (condition.gt && current.is_none_or(|current| at <= current))
            || (condition.lt && current.is_some_and(|current| at >= current));
        if refused {
            return false;
        }
        if at <= Instant::now() {
            shard.remove(key);
        } else {
            set_expiry(&mut shard.volatile, entry, Some(at));
        }
        true
    }

    /// The locked shard that holds `key`.
    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        lock(&self.shards[shard_index(key, self.shards.len())].0)
    }
}

/// Locks a shard. A panic while it was held cannot have left a map half-updated in a way that
/// matters here, so a poisoned lock is simply taken over.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which of `shards` shards holds `key`: FNV-1a, folded. (Each shard's map then hashes the key
/// again with std's randomly seeded SipHash, which keeps a client from choosing keys that
/// collide in one map; the worst it can do with FNV is load one shard more than the others.)
fn shard_index(key: &[u8], shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((hash ^ (hash >> 32)) % shards as u64) as usize
}

fn condition_allows(condition: SetCondition, exists: bool) -> bool {
    match condition {
        SetCondition::Always => true,
        SetCondition::IfAbsent => !exists,
        SetCondition::IfPresent => exists,
    }
}

/// Replaces the bytes of `value`, reusing its buffer unless that is far too big.
fn overwrite(value: &mut Vec<u8>, new: &[u8]) {
    if value.capacity() > 64 && value.capacity() / 4 > new.len() {
        *value = new.to_vec();
    } else {
        value.clear();
        value.extend_from_slice(new);
    }
}

/// Sets an entry's expiry, keeping the shard's count of entries with one right.
fn set_expiry(volatile: &mut usize, entry: &mut Entry, expires: Option<Instant>) {
    match (entry.expires.is_some(), expires.is_some()) {
        (false, true) => *volatile += 1,
        (true, false) => *volatile -= 1,
        _ => {}
    }
    entry.expires = expires;
}

impl Shard {
    /// Removes `key` whether live or expired, returning its entry.
    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let entry = self.map.remove(key)?;
        self.volatile -= usize::from(entry.expires.is_some());
        Some(entry)
    }

    /// Removes the expired entries; returns how many live ones are left.
    fn purge_expired(&mut self) -> usize {
        if self.volatile > 0 {
            let now = Instant::now();
            self.map.retain(|_, entry| entry.expires.is_none_or(|at| at > now));
            self.volatile = self.map.values().filter(|entry| entry.expires.is_some()).count();
        }
        self.map.len()
    }
}
