//! The hole bookkeeping of one download over several connections: which
//! chunk of the file is where (missing, being received by the front stream
//! or by a range, on disk awaiting its states, verified), who may take
//! which next, and the runs of verified chunks a sidecar records. Pure
//! state, no I/O: the swarm drives it under one lock.

use std::collections::BTreeMap;

use ft_protocol::CHUNK_SIZE;

/// Where one chunk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Not on disk, nobody fetching it.
    Missing,
    /// Being received by the front stream (the `Get`).
    Front,
    /// Asked for by range worker `id`.
    Range(u32),
    /// On disk, waiting for the states to check it against.
    Landed,
    /// On disk and verified against the server's states.
    Done,
}

/// Every chunk of a file of `size` bytes, by index. Only chunks that are
/// not missing are kept, so what a file's announced size can make this
/// hold is bounded by what actually arrives, not by the size.
#[derive(Debug, Clone)]
pub struct Chunks {
    size: u64,
    len: u64,
    /// Every chunk not missing.
    slots: BTreeMap<u64, Slot>,
    /// Bytes of the chunks done.
    done_bytes: u64,
    /// The chunk the front stream is in, while it runs.
    front: Option<u64>,
}

/// How many chunks a file of `size` bytes has (the last one may be short).
pub fn count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE)
}

/// The bytes of chunk `k` in a file of `size` bytes.
pub fn bytes(k: u64, size: u64) -> (u64, u64) {
    let start = k * CHUNK_SIZE;
    (start, (start + CHUNK_SIZE).min(size))
}

impl Chunks {
    /// A file of `size` bytes with nothing of it yet, but the chunks in
    /// `done` (indices past the end are ignored).
    pub fn new(size: u64, done: impl IntoIterator<Item = u64>) -> Self {
        let mut chunks = Self {
            size,
            len: count(size),
            slots: BTreeMap::new(),
            done_bytes: 0,
            front: None,
        };
        for k in done {
            chunks.set(k, Slot::Done);
        }
        chunks
    }

    /// How many chunks.
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.len
    }

    /// Where chunk `k` stands.
    pub fn slot(&self, k: u64) -> Slot {
        match self.slots.get(&k) {
            Some(slot) => *slot,
            None if k < self.len => Slot::Missing,
            None => Slot::Done,
        }
    }

    fn set(&mut self, k: u64, slot: Slot) {
        if k >= self.len {
            return;
        }
        let (start, end) = bytes(k, self.size);
        if self.slot(k) == Slot::Done {
            self.done_bytes -= end - start;
        }
        if slot == Slot::Done {
            self.done_bytes += end - start;
        }
        match slot {
            Slot::Missing => self.slots.remove(&k),
            slot => self.slots.insert(k, slot),
        };
    }

    /// The chunks held in `slot`.
    fn held(&self, slot: Slot) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|(_, held)| **held == slot)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether every chunk is verified.
    pub fn complete(&self) -> bool {
        self.done_bytes == self.size && self.slots.len() as u64 == self.len
    }

    /// Bytes of the verified chunks.
    pub fn done_bytes(&self) -> u64 {
        self.done_bytes
    }

    /// The verified chunks.
    pub fn done(&self) -> Vec<u64> {
        self.held(Slot::Done)
    }

    /// The first chunk not verified: where a front stream would start.
    pub fn first_hole(&self) -> Option<u64> {
        let mut k = 0;
        for (at, slot) in &self.slots {
            if *at != k || *slot != Slot::Done {
                break;
            }
            k += 1;
        }
        (k < self.len).then_some(k)
    }

    /// Whether chunks are missing that nobody is fetching.
    pub fn has_missing(&self) -> bool {
        (self.slots.len() as u64) < self.len
    }

    /// The front stream is about to receive chunk `k`: it may when the
    /// chunk is missing (or already its own), and then owns it. `false`
    /// means someone else has it, and the front must stop.
    pub fn front_enters(&mut self, k: u64) -> bool {
        match self.slot(k) {
            Slot::Missing | Slot::Front if k < self.len => {
                self.set(k, Slot::Front);
                self.front = Some(k);
                true
            }
            _ => false,
        }
    }

    /// The front stream has stopped, with the chunks before `verified`
    /// (a chunk index) verified: those are done, what else it held is
    /// missing again.
    pub fn front_stopped(&mut self, verified: u64) {
        for k in self.held(Slot::Front) {
            self.set(
                k,
                if k < verified {
                    Slot::Done
                } else {
                    Slot::Missing
                },
            );
        }
        self.front = None;
    }

    /// Takes for range worker `id` up to `most` missing chunks in a row:
    /// from the top of the last run of missing chunks, so that the front
    /// stream, coming from below, meets the ranges as late as possible.
    /// Never the chunk after the front's own, which it is about to enter.
    /// The chunks taken, as `first..end`.
    pub fn claim(&mut self, id: u32, most: u64) -> Option<(u64, u64)> {
        let reserved = self.front.map(|k| k + 1);
        let free = |k: u64| self.slot(k) == Slot::Missing && Some(k) != reserved;
        // The highest free chunk: below the last, step down past the
        // chunks held (there are only as many of those as have arrived).
        let mut top = self.len.checked_sub(1)?;
        while !free(top) {
            top = top.checked_sub(1)?;
        }
        let mut first = top;
        while first > 0 && top + 1 - first < most.max(1) && free(first - 1) {
            first -= 1;
        }
        for k in first..=top {
            self.set(k, Slot::Range(id));
        }
        Some((first, top + 1))
    }

    /// Chunk `k`, received by range worker `id`, is on disk: verified or
    /// waiting for the states.
    pub fn landed(&mut self, k: u64, id: u32, verified: bool) {
        if self.slot(k) == Slot::Range(id) {
            self.set(k, if verified { Slot::Done } else { Slot::Landed });
        }
    }

    /// The chunks waiting for the states.
    pub fn waiting(&self) -> Vec<u64> {
        self.held(Slot::Landed)
    }

    /// Whether any chunk waits for the states.
    pub fn has_waiting(&self) -> bool {
        self.slots.values().any(|slot| *slot == Slot::Landed)
    }

    /// Chunk `k`, on disk, checked once the states came.
    pub fn checked(&mut self, k: u64, good: bool) {
        if self.slot(k) == Slot::Landed {
            self.set(k, if good { Slot::Done } else { Slot::Missing });
        }
    }

    /// Range worker `id` is gone: what it had not landed is missing again.
    pub fn release(&mut self, id: u32) {
        for k in self.held(Slot::Range(id)) {
            self.set(k, Slot::Missing);
        }
    }

    /// Range worker `id` gives back chunk `k` (it failed to check out).
    pub fn give_back(&mut self, k: u64, id: u32) {
        if self.slot(k) == Slot::Range(id) {
            self.set(k, Slot::Missing);
        }
    }

    /// The verified chunks as runs `[first, end)`, for the sidecar, with
    /// the chunks the front has already written (`front_written`, a chunk
    /// index): a resume checks every one of them again anyway.
    pub fn runs(&self, front_written: u64) -> Vec<[u64; 2]> {
        let mut runs: Vec<[u64; 2]> = Vec::new();
        for (&k, &slot) in &self.slots {
            let on_disk = slot == Slot::Done || (slot == Slot::Front && k < front_written);
            if !on_disk {
                continue;
            }
            match runs.last_mut() {
                Some(run) if run[1] == k => run[1] = k + 1,
                _ => runs.push([k, k + 1]),
            }
        }
        runs
    }
}

/// The chunk indices a sidecar's runs name, each run cut to `len` chunks
/// and to at most `len` in all: a hostile sidecar cannot make a resume
/// allocate or loop past the file's own chunks.
pub fn from_runs(runs: &[[u64; 2]], len: u64) -> Vec<u64> {
    let mut chunks: Vec<u64> = runs
        .iter()
        .flat_map(|&[first, end]| first.min(len)..end.min(len))
        .take(len as usize)
        .collect();
    chunks.sort_unstable();
    chunks.dedup();
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = CHUNK_SIZE;

    #[test]
    fn chunks_cover_the_file_with_a_short_last_one() {
        assert_eq!(count(0), 0);
        assert_eq!(count(1), 1);
        assert_eq!(count(C), 1);
        assert_eq!(count(C + 1), 2);
        assert_eq!(bytes(1, C + 7), (C, C + 7));
        assert_eq!(bytes(0, 3 * C), (0, C));
    }

    #[test]
    fn ranges_come_from_the_top_and_the_front_from_below_until_they_meet() {
        let mut chunks = Chunks::new(10 * C, []);
        assert!(chunks.front_enters(0));
        assert_eq!(chunks.claim(1, 3), Some((7, 10)));
        assert_eq!(chunks.claim(2, 3), Some((4, 7)));
        assert!(chunks.front_enters(1));
        // Chunk 2 is the front's next: never taken; 3 is the last free one.
        assert_eq!(chunks.claim(1, 3), Some((3, 4)));
        assert_eq!(chunks.claim(2, 3), None);
        assert!(chunks.front_enters(2));
        assert!(!chunks.front_enters(3), "a range has it: the front stops");
        chunks.front_stopped(3);
        assert_eq!(chunks.first_hole(), Some(3));
        assert_eq!(chunks.done_bytes(), 3 * C);
        for k in 3..10 {
            let id = if (4..7).contains(&k) { 2 } else { 1 };
            chunks.landed(k, id, true);
        }
        assert!(chunks.complete());
        assert_eq!(chunks.runs(0), vec![[0, 10]]);
    }

    #[test]
    fn what_a_lost_worker_or_a_stopped_front_held_is_missing_again() {
        let mut chunks = Chunks::new(6 * C, []);
        assert!(chunks.front_enters(0));
        assert!(chunks.front_enters(1));
        assert_eq!(chunks.claim(7, 2), Some((4, 6)));
        chunks.landed(5, 7, true);
        chunks.release(7);
        assert_eq!(chunks.slot(4), Slot::Missing);
        assert_eq!(chunks.slot(5), Slot::Done, "landed and verified: kept");
        // The front verified only chunk 0 before it failed.
        chunks.front_stopped(1);
        assert_eq!(chunks.slot(0), Slot::Done);
        assert_eq!(chunks.slot(1), Slot::Missing);
        assert_eq!(chunks.runs(0), vec![[0, 1], [5, 6]]);
        assert_eq!(chunks.first_hole(), Some(1));
        assert!(chunks.has_missing());
    }

    #[test]
    fn chunks_that_land_before_the_states_wait_for_them() {
        let mut chunks = Chunks::new(3 * C, [0]);
        assert_eq!(chunks.claim(1, 8), Some((1, 3)));
        chunks.landed(1, 1, false);
        chunks.landed(2, 1, false);
        chunks.landed(0, 1, false);
        assert_eq!(chunks.slot(0), Slot::Done, "not the worker's: untouched");
        assert_eq!(chunks.waiting(), vec![1, 2]);
        assert!(chunks.has_waiting());
        chunks.checked(1, true);
        chunks.checked(2, false);
        assert_eq!(chunks.slot(1), Slot::Done);
        assert_eq!(chunks.slot(2), Slot::Missing, "bad: fetched again");
        assert_eq!(chunks.claim(1, 8), Some((2, 3)));
        chunks.give_back(2, 1);
        assert_eq!(chunks.slot(2), Slot::Missing);
    }

    #[test]
    fn a_resume_fetches_only_the_holes() {
        // Verified: 0, 1, 4, 5 of 8; holes 2-3 and 6-7.
        let mut chunks = Chunks::new(8 * C - 5, [0, 1, 4, 5]);
        assert_eq!(chunks.first_hole(), Some(2));
        assert!(chunks.front_enters(2));
        assert_eq!(chunks.claim(1, 16), Some((6, 8)), "the top hole, whole");
        assert!(chunks.front_enters(3));
        assert!(!chunks.front_enters(4), "verified already: the front stops");
        assert_eq!(chunks.claim(2, 16), None);
        assert_eq!(chunks.done_bytes(), 4 * C);
    }

    #[test]
    fn the_sidecar_records_what_is_on_disk_and_reads_back_bounded() {
        let mut chunks = Chunks::new(6 * C, [4]);
        assert!(chunks.front_enters(0));
        assert!(chunks.front_enters(1));
        assert_eq!(chunks.runs(1), vec![[0, 1], [4, 5]]);
        assert_eq!(chunks.runs(2), vec![[0, 2], [4, 5]]);
        assert_eq!(from_runs(&[[0, 2], [4, 5]], 6), vec![0, 1, 4]);
        assert_eq!(
            from_runs(&[[5, u64::MAX], [1, 2], [1, 3]], 6),
            vec![1, 2, 5]
        );
        assert_eq!(from_runs(&[[0, u64::MAX]; 1000], 3), vec![0, 1, 2]);
        assert_eq!(from_runs(&[[9, 3]], 6), Vec::<u64>::new());
        assert!(!chunks.front_enters(6), "past the end");
    }

    #[test]
    fn an_announced_size_costs_nothing_until_bytes_arrive() {
        // 2^50 bytes: 2^28 chunks, none of them held.
        let mut chunks = Chunks::new(1 << 50, []);
        assert_eq!(chunks.len(), 1 << 28);
        assert_eq!(chunks.first_hole(), Some(0));
        assert!(chunks.front_enters(0));
        assert_eq!(chunks.claim(1, 2), Some(((1 << 28) - 2, 1 << 28)));
        assert_eq!(chunks.slots.len(), 3);
        assert!(!chunks.complete());
        assert_eq!(Chunks::new(0, []).first_hole(), None);
        assert!(Chunks::new(0, []).complete());
    }
}
