//! A model's column index: feature hash → column, idf and group, in one flat table.
//!
//! Scoring a bug probes this table once for each of its terms (about 1,150 for a bug with
//! comments), and the table of a large model is megabytes: a probe is a cache miss more
//! often than not, so what a term costs is memory latency, not arithmetic. The table is
//! laid out for that:
//!
//! * open addressing with linear probing over 16-byte slots (the key, the column with its
//!   group in the top bits, the idf): a hit is one cache line, a miss usually too (the run
//!   ends at an empty slot);
//! * the keys are hashes already, so a slot is the key's top bits after one multiply (no
//!   hasher);
//! * [`ColumnIndex::lookup_all`] asks for the slot of the term [`AHEAD`] terms after the
//!   one it probes ([`prefetch`]: a hint, nothing waits for it), so that each probe finds
//!   its slot in cache, and the misses overlap. One term at a time, each probe's miss would
//!   wait for the last.

use crate::features::{Group, Groups};

/// What scoring a term needs besides its weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Column {
    pub col: u32,
    pub idf: f32,
    pub group: Group,
}

/// Hash 0 marks an empty slot; a feature whose hash is 0 is kept apart.
const EMPTY: u64 = 0;
/// Columns are below 2^28; the group sits above them.
const GROUP_SHIFT: u32 = 28;
const COLUMN_MASK: u32 = (1 << GROUP_SHIFT) - 1;
/// The most columns a table holds (a bundle with more is refused when it is read).
pub const MAX_COLUMNS: usize = COLUMN_MASK as usize + 1;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Slot {
    key: u64,
    col_and_group: u32,
    idf: f32,
}

impl Slot {
    /// The column this slot holds.
    fn col(self) -> u32 {
        self.col_and_group & COLUMN_MASK
    }

    fn column(self) -> Column {
        Column {
            col: self.col(),
            idf: self.idf,
            group: group_of(self.col_and_group >> GROUP_SHIFT),
        }
    }
}

/// Whether `slot` is a later column than `held` (of the same hash).
fn later(slot: Slot, held: Slot) -> bool {
    slot.col() > held.col()
}

/// Whether `held` should give its place to `placing`: a higher idf (a term fewer documents
/// have), or the same idf and a later column.
fn rarer(held: Slot, placing: Slot) -> bool {
    held.idf
        .total_cmp(&placing.idf)
        .then(held.col().cmp(&placing.col()))
        .is_gt()
}

fn group_of(index: u32) -> Group {
    Group::ALL[index as usize % Group::ALL.len()]
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnIndex {
    slots: Vec<Slot>,
    /// `64 - log2(slots.len())`: a key's slot is its mixed top bits.
    shift: u32,
    zero: Option<Slot>,
    /// The groups some column is of.
    groups: Groups,
    /// How many distinct hashes the table holds (a vocabulary that repeats one has fewer
    /// than its length).
    len: usize,
}

impl ColumnIndex {
    /// The index of a vocabulary: column `i` is `vocab[i]`, with `idf[i]` and `groups[i]`.
    /// At most three quarters of the slots are used. A vocabulary has at most
    /// [`MAX_COLUMNS`] columns (`LinearModel::check`).
    pub fn new(vocab: &[u64], idf: &[f32], groups: &[Group]) -> ColumnIndex {
        let wanted = (vocab.len() * 4 / 3 + 1).next_power_of_two().max(16);
        let mut index = ColumnIndex {
            slots: vec![Slot::default(); wanted],
            shift: 64 - wanted.trailing_zeros(),
            zero: None,
            groups: Groups::NONE,
            len: 0,
        };
        for (i, &key) in vocab.iter().enumerate() {
            let group = groups.get(i).copied().unwrap_or(Group::Data);
            index.groups = index.groups.union(Groups::of([group]));
            index.insert(Slot {
                key,
                col_and_group: (i as u32 & COLUMN_MASK) | (u32::from(group.index()) << GROUP_SHIFT),
                idf: idf.get(i).copied().unwrap_or(1.0),
            });
        }
        index
    }

    /// Places one column. A hash already held keeps the later of its two columns (a
    /// vocabulary that repeats one is refused when a bundle is read).
    ///
    /// The terms most documents have (the lowest idf) sit nearest their home slot: a bug's
    /// terms are mostly such terms, and are then found at the first probe. Walking from the
    /// new column's home slot, a slot held by a rarer term (higher idf; at equal idf, a
    /// later column) takes the column being placed, and the walk goes on placing the one it
    /// held (an ordered hash table, Amble and Knuth's): the table comes out the same as if
    /// the columns had been placed in order of idf, whatever order they come in, and with
    /// no sorted copy of the vocabulary.
    fn insert(&mut self, slot: Slot) {
        if slot.key == EMPTY {
            self.len += usize::from(self.zero.is_none());
            if self.zero.is_none_or(|held| later(slot, held)) {
                self.zero = Some(slot);
            }
            return;
        }
        let mask = self.slots.len() - 1;
        let mut at = self.home(slot.key);
        while self.slots[at].key != EMPTY {
            if self.slots[at].key == slot.key {
                if later(slot, self.slots[at]) {
                    self.slots[at] = slot;
                }
                return;
            }
            at = (at + 1) & mask;
        }
        let mut placing = slot;
        let mut at = self.home(placing.key);
        loop {
            let held = self.slots[at];
            if held.key == EMPTY {
                self.slots[at] = placing;
                self.len += 1;
                return;
            }
            if rarer(held, placing) {
                self.slots[at] = placing;
                placing = held;
            }
            at = (at + 1) & mask;
        }
    }

    /// How many columns the table holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every `(hash, column)`, in column order: the vocabulary the table was made of.
    pub fn columns(&self) -> Vec<(u64, Column)> {
        let mut all: Vec<(u64, Column)> = self
            .slots
            .iter()
            .filter(|s| s.key != EMPTY)
            .chain(&self.zero)
            .map(|s| (s.key, s.column()))
            .collect();
        all.sort_unstable_by_key(|(_, c)| c.col);
        all
    }

    /// Whether some column is of `group`: a term of any other group cannot have one, so
    /// it need not be looked up (a title-only model skips a bug's comments).
    pub fn reads(&self, group: Group) -> bool {
        self.groups.contains(group)
    }

    /// The groups some column is of: the only terms of a document it looks up.
    pub fn groups(&self) -> Groups {
        self.groups
    }

    fn home(&self, key: u64) -> usize {
        home(key, self.shift)
    }

    /// The column of one feature hash.
    pub fn get(&self, key: u64) -> Option<Column> {
        self.slot(key).map(|slot| slot.column())
    }

    /// The slot that holds `key`, if one does: from its home slot to the first empty one.
    #[inline(always)]
    fn slot(&self, key: u64) -> Option<&Slot> {
        if key == EMPTY {
            return self.zero.as_ref();
        }
        if self.slots.is_empty() {
            return None;
        }
        // `home` is below the length (a power of two); the mask says so to the compiler.
        let mask = self.slots.len() - 1;
        let mut at = self.home(key) & mask;
        loop {
            let slot = &self.slots[at];
            if slot.key == key {
                return Some(slot);
            }
            if slot.key == EMPTY {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// Calls `found` with each item whose key has a column, and the column's number and
    /// idf, in order. The slots of all items are read first (see the module
    /// documentation): the same answers as [`get`](Self::get) on each, sooner.
    ///
    /// Scoring runs this once for every term of a bug and every model, so it is written
    /// for it: the caller knows the terms' group (a hash is made with its group, so the
    /// column's is the same), and nothing is decoded that scoring does not read.
    pub fn lookup_all<'a, T>(
        &self,
        items: &'a [T],
        key: impl Fn(&T) -> u64,
        mut found: impl FnMut(&'a T, u32, f32),
    ) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let slot_of = |key: u64| &self.slots[self.home(key) & mask];
        for item in items.iter().take(AHEAD) {
            prefetch(slot_of(key(item)));
        }
        for (i, item) in items.iter().enumerate() {
            if let Some(next) = items.get(i + AHEAD) {
                prefetch(slot_of(key(next)));
            }
            if let Some(slot) = self.slot(key(item)) {
                found(item, slot.col(), slot.idf);
            }
        }
    }
}

/// The first slot of `key` in an open-addressed table of `2^(64 - shift)` slots: the top bits
/// of the key after one multiply (keys are hashes already; the multiply spreads hashes that
/// differ only in their low bits).
pub fn home(key: u64, shift: u32) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

/// How many items ahead of the one probed [`ColumnIndex::lookup_all`] asks for: about as
/// many cache misses as a core keeps in flight.
pub const AHEAD: usize = 16;

/// Asks the processor to bring the cache line of `value` closer. A hint: nothing waits for
/// it, unlike a load, whose result (even unused) holds its place in the queue of
/// instructions until memory answers, so that a few hundred of them stall the ones behind.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes nothing but the cache; the address is a
    // reference's.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ColumnIndex {
        /// How many slots `get` reads to find `key`, or to find it is not there.
        fn probes(&self, key: u64) -> usize {
            let mask = self.slots.len() - 1;
            let mut at = self.home(key);
            let mut read = 1;
            while self.slots[at].key != key && self.slots[at].key != EMPTY {
                at = (at + 1) & mask;
                read += 1;
            }
            read
        }
    }

    /// The most frequent terms (lowest idf) go in first, so they sit in their home slot:
    /// in a table three quarters full, where a key inserted in column order takes about
    /// 2.5 reads, the tenth with the lowest idf takes little more than one.
    #[test]
    fn the_most_frequent_terms_are_found_at_the_first_probe() {
        let mut rng = crate::models::linear::SplitMix(5);
        let n = 12_000; // 2^14 slots: 73 % full
        let vocab: Vec<u64> = (0..n).map(|_| rng.next_u64() | 1).collect();
        let idf: Vec<f32> = (0..n).map(|_| 1.0 + rng.unit() as f32 * 8.0).collect();
        let index = ColumnIndex::new(&vocab, &idf, &vec![Group::Title; n]);
        let mut by_idf: Vec<usize> = (0..n).collect();
        by_idf.sort_by(|&a, &b| idf[a].total_cmp(&idf[b]));
        let mean = |keys: &[usize]| {
            keys.iter().map(|&i| index.probes(vocab[i])).sum::<usize>() as f64 / keys.len() as f64
        };
        let frequent = mean(&by_idf[..n / 10]);
        let all = mean(&by_idf);
        assert!(frequent < 1.1, "the most frequent tenth: {frequent} reads");
        assert!(all > 1.5, "every key: {all} reads");
        for (i, key) in vocab.iter().enumerate() {
            assert_eq!(index.get(*key).map(|c| c.col), Some(i as u32));
        }
    }

    /// Where each column sits depends on the columns' idf, not on the order they are placed
    /// in: the table is the one that placing them in order of idf (then column) makes.
    #[test]
    fn a_table_is_the_same_whatever_order_its_columns_are_placed_in() {
        let mut rng = crate::models::linear::SplitMix(9);
        let n = 3_000; // 2^12 slots: 73 % full
        let vocab: Vec<u64> = (0..n).map(|_| rng.next_u64() | 1).collect();
        // Few distinct values: many ties, broken by column.
        let idf: Vec<f32> = (0..n).map(|_| 1.0 + rng.below(12) as f32 * 0.5).collect();
        let index = ColumnIndex::new(&vocab, &idf, &vec![Group::Title; n]);
        let slot = |i: usize| Slot {
            key: vocab[i],
            col_and_group: i as u32 | (u32::from(Group::Title.index()) << GROUP_SHIFT),
            idf: idf[i],
        };
        let empty = || ColumnIndex {
            slots: vec![Slot::default(); index.slots.len()],
            shift: index.shift,
            ..ColumnIndex::default()
        };
        let mut by_idf: Vec<usize> = (0..n).collect();
        by_idf.sort_by(|&a, &b| idf[a].total_cmp(&idf[b]));
        let mut shuffled: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut shuffled);
        for order in [by_idf, shuffled, (0..n).rev().collect()] {
            let mut other = empty();
            for i in order {
                other.insert(slot(i));
            }
            assert!(other.slots == index.slots);
            assert_eq!(other.len, n);
        }
    }

    /// A hash the vocabulary repeats (a bundle that does is refused when read) keeps its
    /// last column, whichever of its columns has the lower idf.
    #[test]
    fn a_repeated_hash_keeps_its_last_column() {
        for key in [0u64, 42] {
            for idf in [[2.0, 1.0, 0.5], [0.5, 1.0, 2.0]] {
                let index = ColumnIndex::new(&[key, 7, key], &idf, &[Group::Title; 3]);
                assert_eq!(index.get(key).map(|c| (c.col, c.idf)), Some((2, idf[2])));
                assert_eq!(index.len(), 2);
            }
        }
    }

    #[test]
    fn every_key_finds_its_column_and_others_find_none() {
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut vocab: Vec<u64> = (0..5_000).map(|_| next()).collect();
        vocab.push(0);
        let groups: Vec<Group> = (0..vocab.len())
            .map(|i| [Group::Data, Group::Title, Group::Chars, Group::Files][i % 4])
            .collect();
        let idf: Vec<f32> = (0..vocab.len()).map(|i| i as f32 / 7.0).collect();
        let index = ColumnIndex::new(&vocab, &idf, &groups);
        for (i, key) in vocab.iter().enumerate() {
            let column = index.get(*key).expect("a vocabulary key");
            assert_eq!(column.col as usize, i);
            assert_eq!(column.group, groups[i]);
            assert_eq!(column.idf, idf[i]);
        }
        let strangers: Vec<u64> = (0..5_000).map(|_| next()).collect();
        assert!(strangers.iter().all(|k| index.get(*k).is_none()));

        let mixed: Vec<u64> = vocab.iter().chain(&strangers).copied().step_by(3).collect();
        let mut batched = Vec::new();
        index.lookup_all(&mixed, |k| *k, |k, col, idf| batched.push((*k, col, idf)));
        let one_by_one: Vec<(u64, u32, f32)> = mixed
            .iter()
            .filter_map(|k| index.get(*k).map(|c| (*k, c.col, c.idf)))
            .collect();
        assert!(!one_by_one.is_empty() && one_by_one.len() < mixed.len());
        assert_eq!(batched, one_by_one);
        assert!(ColumnIndex::default().get(42).is_none());
        assert_eq!(index.len(), vocab.len());
        let columns = index.columns();
        assert_eq!(columns.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vocab);
        for (i, (_, c)) in columns.iter().enumerate() {
            assert_eq!((c.col as usize, c.idf, c.group), (i, idf[i], groups[i]));
        }
        assert!(index.reads(Group::Files) && !index.reads(Group::Comments));
        for g in Group::ALL {
            assert_eq!(group_of(u32::from(g.index())), g);
        }
    }
}
