//! Hashing passes over cold files, shared and bounded. There is at most one
//! pass per file version, however many requests wait on it; it runs while at
//! least one of them still waits, and stops at the next chunk once none does,
//! its progress kept so that a later pass continues rather than restarts.
//! Server-wide, at most `max_hashing` chunks are hashed at any moment, taken
//! in turn (a fair semaphore, one chunk per permit), so cold hashing takes
//! that many cores at most however many clients ask, on as many threads of
//! their own ([`crate::workers`]); a pass waiting for its turn holds no
//! thread. A request waits through a [`Digesting`]: dropping
//! it (its client left) withdraws its own interest and nobody else's.
//!
//! The `Get` that starts a pass rides it: the pass hands it each chunk it
//! has just read and hashed, so a file's first download reads it once.
//! What riders hold is bounded server-wide (a budget of bytes); a chunk
//! past the budget, or a rider that falls behind while others wait on the
//! pass, is sent from the file instead, and the pass never waits on a rider
//! for more than [`RIDE_PATIENCE`].

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use bytes::Bytes;
use ft_protocol::{ChainHasher, Digest, ErrorCode, RemoteError, CHUNK_SIZE};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::cache::{Caches, Digests};
use crate::workers::Workers;

/// What a pass reads: one file version. Everything here blocks.
pub trait Source: Send + 'static {
    /// The `len` bytes at `pos`; fewer means the file changed (an error).
    fn read(&mut self, pos: u64, len: usize) -> Result<Bytes, RemoteError>;
    /// `FileChanged` unless the file is still the version the pass hashes.
    fn unchanged(&self) -> Result<(), RemoteError>;
    /// Keeps the digests the pass computed beside the file, where the
    /// backend can (run on a blocking thread once waiters have them).
    fn keep(&self, _digests: &Digests) {}
}

/// How far a pass has got, as its waiters see it.
#[derive(Debug, Clone)]
enum Progress {
    /// This many chunks are hashed; their states are in [`Pass::states`].
    Hashed(u64),
    /// The whole file.
    Done(Arc<Digests>),
    /// It cannot be hashed (gone, changed, unreadable).
    Failed(RemoteError),
}

/// Longest a pass waits for its one rider to take a chunk when nobody else
/// waits on it: a rider slower than that (a slow link) is sent from the
/// file from then on.
pub const RIDE_PATIENCE: Duration = ft_protocol::KEEPALIVE;

/// Units of the riding budget: a chunk takes one per MiB.
const RIDE_UNIT: usize = 1 << 20;

/// What a pass hands its rider for one chunk.
enum Ridden {
    /// The chunk's bytes, with their share of the riding budget.
    Data(Bytes, OwnedSemaphorePermit),
    /// Past the budget: send this chunk from the file.
    FromFile,
}

/// The request a pass hands its chunks to, from chunk `first` on.
struct Rider {
    first: u64,
    chunks: mpsc::Sender<(u64, Ridden)>,
}

/// One pass over one file version.
struct Pass {
    /// Requests waiting on it; changed under the passes' lock when it grows.
    interest: AtomicUsize,
    /// Woken when the last waiter leaves, so that a pass waiting for its turn
    /// notices.
    idle: Notify,
    progress: watch::Sender<Progress>,
    /// The states at boundaries 1, 2, … reached so far.
    states: Mutex<Vec<Digest>>,
    /// The request that started the pass, while it rides it.
    rider: Mutex<Option<Rider>>,
}

impl Pass {
    fn states(&self) -> MutexGuard<'_, Vec<Digest>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rider(&self) -> MutexGuard<'_, Option<Rider>> {
        self.rider.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wanted(&self) -> bool {
        self.interest.load(Ordering::SeqCst) > 0
    }
}

/// The passes of one server, by file version.
pub struct Passes<V> {
    running: Mutex<HashMap<V, Arc<Pass>>>,
    permits: Arc<Semaphore>,
    /// The riding budget, in [`RIDE_UNIT`]s.
    riding: Arc<Semaphore>,
    /// The threads that read and hash chunks, one per permit.
    workers: Workers,
    caches: Arc<Caches<V>>,
}

impl<V: Copy + Eq + Hash + Send + Sync + 'static> Passes<V> {
    /// No passes yet; at most `max_hashing` chunks hashed at once and
    /// `ride_bytes` of chunks held by riders, results kept in `caches`.
    pub fn new(max_hashing: usize, ride_bytes: u64, caches: Arc<Caches<V>>) -> Self {
        let units = usize::try_from(ride_bytes).unwrap_or(usize::MAX) / RIDE_UNIT;
        Self {
            running: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_hashing.max(1))),
            riding: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
            workers: Workers::new(max_hashing, "ft-hash"),
            caches,
        }
    }

    /// Passes running now.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<V, Arc<Pass>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on the pass over `version` (`size` bytes), starting one if none
    /// runs; `open` gives a new pass its source, on a blocking thread. A
    /// request that starts a pass rides it from chunk `ride_from`, if given.
    /// Must be called within the runtime.
    pub fn join<S, O>(
        self: &Arc<Self>,
        version: V,
        size: u64,
        ride_from: Option<u64>,
        open: O,
    ) -> Digesting
    where
        S: Source,
        O: FnOnce() -> Result<S, RemoteError> + Send + 'static,
    {
        let mut running = self.lock();
        if let Some(pass) = running.get(&version) {
            pass.interest.fetch_add(1, Ordering::SeqCst);
            return Digesting::waiting(Arc::clone(pass), None);
        }
        let known = self.caches.prefix(&version);
        // A pass that continues past where the request starts has nothing
        // to hand it: those chunks are sent from the file.
        let ride_from = ride_from.filter(|first| *first >= known.len() as u64);
        let (rider, ride) = match ride_from {
            Some(first) => {
                let (chunks, ride) = mpsc::channel(1);
                (Some(Rider { first, chunks }), Some(ride))
            }
            None => (None, None),
        };
        let (progress, _) = watch::channel(Progress::Hashed(known.len() as u64));
        let pass = Arc::new(Pass {
            interest: AtomicUsize::new(1),
            idle: Notify::new(),
            progress,
            states: Mutex::new(known),
            rider: Mutex::new(rider),
        });
        running.insert(version, Arc::clone(&pass));
        drop(running);
        let passes = Arc::clone(self);
        let waiter = Digesting::waiting(Arc::clone(&pass), ride);
        tokio::spawn(async move { passes.run(version, size, pass, open).await });
        waiter
    }

    /// Drives one pass to its end: done, failed, or no longer wanted.
    async fn run<S: Source>(
        self: Arc<Self>,
        version: V,
        size: u64,
        pass: Arc<Pass>,
        open: impl FnOnce() -> Result<S, RemoteError> + Send + 'static,
    ) {
        let resumed = Cursor::resume(&pass.states(), size);
        let mut cursor = match resumed {
            Some(cursor) => cursor,
            None => {
                pass.states().clear();
                pass.progress.send_replace(Progress::Hashed(0));
                Cursor::start(size)
            }
        };
        let mut open = Some(open);
        let last = loop {
            let Some(permit) = self.turn(&pass).await else {
                if self.retire(&version, &pass) {
                    return;
                }
                continue;
            };
            let opener = open.take();
            let stepped = self
                .workers
                .run(move || {
                    let _permit: OwnedSemaphorePermit = permit;
                    cursor.step(opener)
                })
                .await;
            let Some((next, step)) = stepped else {
                break Progress::Failed(internal("hashing failed: its worker stopped"));
            };
            cursor = next;
            match step {
                Ok(Step::Chunk { at, data, state }) => {
                    if let Some(state) = state {
                        let index = {
                            let mut states = pass.states();
                            states.push(state);
                            states.len() as u64
                        };
                        self.caches.note_prefix(version, size, index, state);
                        pass.progress.send_replace(Progress::Hashed(index));
                    }
                    self.hand(&pass, at, data).await;
                }
                Ok(Step::Finished(sha256)) => {
                    let checkpoints = pass.states().clone();
                    let digests = Digests {
                        sha256,
                        checkpoints,
                    };
                    let digests = self.caches.remember(version, digests);
                    if let Some(source) = cursor.source.take() {
                        let kept = Arc::clone(&digests);
                        tokio::task::spawn_blocking(move || source.keep(&kept));
                    }
                    break Progress::Done(digests);
                }
                Err(err) => break Progress::Failed(err),
            }
        };
        self.lock().remove(&version);
        pass.rider().take();
        pass.progress.send_replace(last);
    }

    /// Hands chunk `at` to the pass's rider, if it rides from there: the
    /// bytes if the budget has room, else word to send it from the file. A
    /// rider that does not take it in time (at once when others wait on the
    /// pass) rides no more.
    async fn hand(&self, pass: &Pass, at: u64, data: Bytes) {
        let chunks = match &*pass.rider() {
            Some(rider) if at >= rider.first => rider.chunks.clone(),
            _ => return,
        };
        let units = u32::try_from(data.len().div_ceil(RIDE_UNIT)).unwrap_or(u32::MAX);
        let ridden = match Arc::clone(&self.riding).try_acquire_many_owned(units) {
            Ok(budget) => Ridden::Data(data, budget),
            Err(_) => Ridden::FromFile,
        };
        let taken = match pass.interest.load(Ordering::SeqCst) {
            1 => matches!(
                tokio::time::timeout(RIDE_PATIENCE, chunks.send((at, ridden))).await,
                Ok(Ok(()))
            ),
            _ => chunks.try_send((at, ridden)).is_ok(),
        };
        if !taken {
            pass.rider().take();
        }
    }

    /// A permit to hash one chunk, once it is this pass's turn; `None` as
    /// soon as nobody waits on the pass.
    async fn turn(&self, pass: &Pass) -> Option<OwnedSemaphorePermit> {
        while pass.wanted() {
            tokio::select! {
                permit = Arc::clone(&self.permits).acquire_owned() => {
                    return permit.ok().filter(|_| pass.wanted());
                }
                () = pass.idle.notified() => {}
            }
        }
        None
    }

    /// Ends a pass nobody waits on, unless a request joined it meanwhile
    /// (joining holds the same lock). Its progress stays in the prefix cache.
    fn retire(&self, version: &V, pass: &Pass) -> bool {
        let mut running = self.lock();
        if pass.wanted() {
            return false;
        }
        running.remove(version);
        drop(running);
        pass.rider().take();
        true
    }
}

/// Where a pass is in its file; moved to a blocking thread for each chunk.
struct Cursor<S> {
    source: Option<S>,
    hasher: ChainHasher,
    pos: u64,
    size: u64,
}

/// What one step did.
enum Step {
    /// Hashed one more chunk, chunk `at` (from 0): its bytes, and the state
    /// at its end if that is a boundary.
    Chunk {
        at: u64,
        data: Bytes,
        state: Option<Digest>,
    },
    /// Hashed the whole file, and it is still the version it was: its SHA-256.
    Finished(Digest),
}

impl<S: Source> Cursor<S> {
    fn start(size: u64) -> Self {
        Self {
            source: None,
            hasher: ChainHasher::new(),
            pos: 0,
            size,
        }
    }

    /// Continues after the chunks whose states an earlier pass left.
    fn resume(states: &[Digest], size: u64) -> Option<Self> {
        let done = states.len() as u64 * CHUNK_SIZE;
        let hasher = ChainHasher::resume(states.last()?, done)?;
        (done <= size).then_some(Self {
            source: None,
            hasher,
            pos: done,
            size,
        })
    }

    /// Opens the source if it is not yet, then hashes one chunk, or
    /// finishes. Blocks.
    fn step<O>(mut self, open: Option<O>) -> (Self, Result<Step, RemoteError>)
    where
        O: FnOnce() -> Result<S, RemoteError>,
    {
        let step = self.advance(open);
        (self, step)
    }

    fn advance<O>(&mut self, open: Option<O>) -> Result<Step, RemoteError>
    where
        O: FnOnce() -> Result<S, RemoteError>,
    {
        let source = match (&mut self.source, open) {
            (Some(source), _) => source,
            (None, Some(open)) => self.source.insert(open()?),
            (None, None) => return Err(internal("a hashing pass lost its file")),
        };
        if self.pos >= self.size {
            source.unchanged()?;
            let hasher = std::mem::replace(&mut self.hasher, ChainHasher::new());
            return Ok(Step::Finished(hasher.finalize()));
        }
        let at = self.pos / CHUNK_SIZE;
        let len = CHUNK_SIZE.min(self.size - self.pos) as usize;
        let data = source.read(self.pos, len)?;
        self.hasher.update(&data);
        self.pos += len as u64;
        let state = match self.pos.is_multiple_of(CHUNK_SIZE) {
            // A boundary is a multiple of 64, where the state always exists.
            true => Some(
                self.hasher
                    .state()
                    .ok_or_else(|| internal("no hash state at a chunk boundary"))?,
            ),
            false => None,
        };
        Ok(Step::Chunk { at, data, state })
    }
}

fn internal(message: impl Into<String>) -> RemoteError {
    RemoteError::new(ErrorCode::Internal, message)
}

/// A request's hold on a file's digests: known already, or a pass it waits
/// on. Dropping it withdraws this request's interest only.
pub struct Digesting {
    inner: Inner,
    /// The chunks of the pass this request rides, while it does.
    ride: Option<mpsc::Receiver<(u64, Ridden)>>,
}

enum Inner {
    Known(Arc<Digests>),
    Waiting {
        pass: Arc<Pass>,
        progress: watch::Receiver<Progress>,
    },
}

impl Digesting {
    /// Digests already known: nothing to wait for.
    pub fn known(digests: Arc<Digests>) -> Self {
        Self {
            inner: Inner::Known(digests),
            ride: None,
        }
    }

    fn waiting(pass: Arc<Pass>, ride: Option<mpsc::Receiver<(u64, Ridden)>>) -> Self {
        let progress = pass.progress.subscribe();
        Self {
            inner: Inner::Waiting { pass, progress },
            ride,
        }
    }

    /// Whether this request rides its pass, so that [`Self::chunk`] is worth
    /// waiting for.
    pub fn rides(&self) -> bool {
        self.ride.is_some()
    }

    /// Chunk `at` (from 0) as the pass read it, with its share of the
    /// riding budget (hold it until the bytes are sent); `None` when it is
    /// to be sent from the file. Chunks are asked for in order; out of step,
    /// or once the pass has let this request go, it rides no more.
    pub async fn chunk(&mut self, at: u64) -> Option<(Bytes, OwnedSemaphorePermit)> {
        let ride = self.ride.as_mut()?;
        match ride.recv().await {
            Some((got, Ridden::Data(data, budget))) if got == at => Some((data, budget)),
            Some((got, Ridden::FromFile)) if got == at => None,
            _ => {
                self.ride = None;
                None
            }
        }
    }

    /// The state at boundary `index` (1-based), once the pass has reached it.
    pub async fn state(&mut self, index: u64) -> Result<Digest, RemoteError> {
        let missing = || internal(format!("no checkpoint {index}"));
        let (pass, progress) = match &mut self.inner {
            Inner::Known(digests) => return digests.checkpoint(index).ok_or_else(missing),
            Inner::Waiting { pass, progress } => (pass, progress),
        };
        let reached = |now: &Progress| !matches!(now, Progress::Hashed(n) if *n < index);
        match wait(progress, reached).await? {
            Progress::Hashed(_) => {
                let slot = usize::try_from(index - 1).map_err(|_| missing())?;
                pass.states().get(slot).copied().ok_or_else(missing)
            }
            Progress::Done(digests) => digests.checkpoint(index).ok_or_else(missing),
            Progress::Failed(err) => Err(err),
        }
    }

    /// The whole file's digests, once they are known.
    pub async fn digests(&mut self) -> Result<Arc<Digests>, RemoteError> {
        let progress = match &mut self.inner {
            Inner::Known(digests) => return Ok(Arc::clone(digests)),
            Inner::Waiting { progress, .. } => progress,
        };
        match wait(progress, |now| !matches!(now, Progress::Hashed(_))).await? {
            Progress::Done(digests) => Ok(digests),
            Progress::Failed(err) => Err(err),
            Progress::Hashed(_) => Err(internal("a hashing pass ended unfinished")),
        }
    }
}

async fn wait(
    progress: &mut watch::Receiver<Progress>,
    ready: impl FnMut(&Progress) -> bool,
) -> Result<Progress, RemoteError> {
    match progress.wait_for(ready).await {
        Ok(now) => Ok(now.clone()),
        Err(_) => Err(internal("the hashing pass stopped")),
    }
}

impl Drop for Digesting {
    fn drop(&mut self) {
        if let Inner::Waiting { pass, .. } = &self.inner {
            if pass.interest.fetch_sub(1, Ordering::SeqCst) == 1 {
                pass.idle.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    /// What the fake sources of one test share: bytes read, steps at once.
    #[derive(Default)]
    struct Meter {
        read: AtomicU64,
        now: AtomicUsize,
        most: AtomicUsize,
    }

    /// A file of `size` bytes of `(i % 251)` that takes `delay` per chunk.
    struct Fake {
        meter: Arc<Meter>,
        delay: Duration,
    }

    impl Source for Fake {
        fn read(&mut self, pos: u64, len: usize) -> Result<Bytes, RemoteError> {
            let now = self.meter.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.meter.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            self.meter.read.fetch_add(len as u64, Ordering::SeqCst);
            self.meter.now.fetch_sub(1, Ordering::SeqCst);
            Ok((pos..pos + len as u64).map(|i| (i % 251) as u8).collect())
        }

        fn unchanged(&self) -> Result<(), RemoteError> {
            Ok(())
        }
    }

    fn passes(max: usize) -> Arc<Passes<u64>> {
        Arc::new(Passes::new(
            max,
            64 << 20,
            Arc::new(Caches::new(1 << 20, 1 << 20)),
        ))
    }

    fn join(
        passes: &Arc<Passes<u64>>,
        version: u64,
        chunks: u64,
        meter: &Arc<Meter>,
        delay: Duration,
    ) -> Digesting {
        let meter = Arc::clone(meter);
        passes.join(version, chunks * CHUNK_SIZE, None, move || {
            Ok(Fake { meter, delay })
        })
    }

    fn expected(chunks: u64) -> Digest {
        let data: Vec<u8> = (0..chunks * CHUNK_SIZE).map(|i| (i % 251) as u8).collect();
        let mut hasher = ChainHasher::new();
        hasher.update(&data);
        hasher.finalize()
    }

    #[tokio::test]
    async fn eight_waiters_share_one_pass() {
        let passes = passes(2);
        let meter = Arc::new(Meter::default());
        let mut waiters: Vec<Digesting> = (0..8)
            .map(|_| join(&passes, 1, 3, &meter, Duration::ZERO))
            .collect();
        assert_eq!(passes.running(), 1);
        for waiter in &mut waiters {
            let digests = waiter.digests().await.expect("hashed");
            assert_eq!(digests.sha256, expected(3));
            assert_eq!(digests.checkpoints.len(), 3);
        }
        assert_eq!(
            meter.read.load(Ordering::SeqCst),
            3 * CHUNK_SIZE,
            "read once"
        );
        assert_eq!(passes.running(), 0);
    }

    #[tokio::test]
    async fn a_pass_nobody_waits_on_stops_and_the_next_continues_from_it() {
        let passes = passes(1);
        let meter = Arc::new(Meter::default());
        let slow = Duration::from_millis(20);
        let mut first = join(&passes, 7, 50, &meter, slow);
        first.state(2).await.expect("two chunks");
        drop(first);
        // It stops within a chunk of its last waiter leaving.
        for _ in 0..100 {
            if passes.running() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(passes.running(), 0, "stopped");
        let read = meter.read.load(Ordering::SeqCst);
        assert!(
            read <= 4 * CHUNK_SIZE,
            "read {read} bytes after its client left"
        );
        // A later request continues where it stopped.
        let fast = Arc::new(Meter::default());
        let mut second = join(&passes, 7, 50, &fast, Duration::ZERO);
        let digests = second.digests().await.expect("hashed");
        assert_eq!(digests.sha256, expected(50));
        assert_eq!(digests.checkpoints.len(), 50);
        assert_eq!(
            fast.read.load(Ordering::SeqCst) + read,
            50 * CHUNK_SIZE,
            "nothing hashed twice"
        );
    }

    #[tokio::test]
    async fn one_waiter_leaving_stops_nothing_of_another() {
        let passes = passes(1);
        let meter = Arc::new(Meter::default());
        let delay = Duration::from_millis(2);
        let mut staying = join(&passes, 3, 6, &meter, delay);
        let leaving = join(&passes, 3, 6, &meter, delay);
        drop(leaving);
        let digests = staying.digests().await.expect("hashed");
        assert_eq!(digests.sha256, expected(6));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_chunks_are_hashed_at_once_than_allowed() {
        let passes = passes(2);
        let meter = Arc::new(Meter::default());
        let mut waiters: Vec<Digesting> = (0..6)
            .map(|version| join(&passes, version, 4, &meter, Duration::from_millis(5)))
            .collect();
        for waiter in &mut waiters {
            waiter.digests().await.expect("hashed");
        }
        let most = meter.most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} chunks at once");
    }

    #[tokio::test]
    async fn a_failing_source_fails_every_waiter() {
        struct Broken;
        impl Source for Broken {
            fn read(&mut self, _: u64, _: usize) -> Result<Bytes, RemoteError> {
                Err(RemoteError::new(ErrorCode::FileChanged, "gone"))
            }
            fn unchanged(&self) -> Result<(), RemoteError> {
                Ok(())
            }
        }
        let passes = passes(1);
        let mut a = passes.join(9, CHUNK_SIZE, None, || Ok(Broken));
        let mut b = passes.join(9, CHUNK_SIZE, None, || Ok(Broken));
        assert_eq!(
            a.state(1).await.map_err(|e| e.code),
            Err(ErrorCode::FileChanged)
        );
        assert_eq!(
            b.digests().await.map(|_| ()).map_err(|e| e.code),
            Err(ErrorCode::FileChanged)
        );
        assert_eq!(passes.running(), 0);
    }

    #[tokio::test]
    async fn the_request_that_starts_a_pass_rides_it_within_the_budget() {
        let size = 3 * CHUNK_SIZE + 10;
        let expected: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        // Room for the chunk the rider holds and the next one (the pass may
        // hand that one over before the rider lets the last go), then none
        // at all.
        for (budget, rides) in [(8 << 20, true), (0, false)] {
            let caches = Arc::new(Caches::new(1 << 20, 1 << 20));
            let passes = Arc::new(Passes::new(1, budget, caches));
            let meter = Arc::new(Meter::default());
            let fake = Arc::clone(&meter);
            let mut rider = passes.join(1, size, Some(1), move || {
                Ok(Fake {
                    meter: fake,
                    delay: Duration::ZERO,
                })
            });
            assert!(rider.rides());
            for at in 1..4 {
                match rider.chunk(at).await {
                    Some((data, budget)) => {
                        assert!(rides, "no budget, yet chunk {at} handed over");
                        let start = (at * CHUNK_SIZE) as usize;
                        assert_eq!(&data[..], &expected[start..start + data.len()]);
                        drop(budget);
                    }
                    None => assert!(!rides, "chunk {at} not handed over"),
                }
            }
            let digests = rider.digests().await.expect("hashed");
            let mut hasher = ChainHasher::new();
            hasher.update(&expected);
            assert_eq!(digests.sha256, hasher.finalize());
            assert_eq!(meter.read.load(Ordering::SeqCst), size, "read once");
        }
    }

    #[tokio::test]
    async fn a_pass_that_continues_past_the_start_of_a_get_is_not_ridden() {
        let passes = passes(1);
        let meter = Arc::new(Meter::default());
        let mut first = join(&passes, 5, 8, &meter, Duration::from_millis(20));
        first.state(3).await.expect("three chunks");
        drop(first);
        for _ in 0..100 {
            if passes.running() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The next pass starts at chunk 3 or later: a Get from chunk 1 would
        // wait there for a chunk that never comes.
        let fake = Arc::clone(&meter);
        let behind = passes.join(5, 8 * CHUNK_SIZE, Some(1), move || {
            Ok(Fake {
                meter: fake,
                delay: Duration::ZERO,
            })
        });
        assert!(!behind.rides());
        drop(behind);
    }
}
