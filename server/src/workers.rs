//! A fixed set of threads for the hashing passes' chunks. Each chunk's
//! buffer is allocated, filled and hashed on one of a few threads, so on a
//! few of the allocator's arenas, however many passes take turns: run on
//! the runtime's pool of blocking threads instead, every arena in the
//! process kept freed chunks for reuse, and the server's peak memory grew
//! with the number of threads rather than with what it held.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run blocking jobs in the order they come.
pub struct Workers {
    jobs: mpsc::Sender<Job>,
    /// Threads started; none means jobs run on the runtime's blocking pool.
    started: usize,
}

impl Workers {
    /// Starts `count` threads named `name-N` (at least one).
    pub fn new(count: usize, name: &str) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let started = (0..count.max(1))
            .filter(|n| {
                let queue = Arc::clone(&queue);
                let thread = std::thread::Builder::new().name(format!("{name}-{n}"));
                let spawned = thread.spawn(move || serve(&queue));
                if let Err(err) = &spawned {
                    tracing::warn!("cannot start a {name} thread: {err}");
                }
                spawned.is_ok()
            })
            .count();
        Self { jobs, started }
    }

    /// Runs `work` on one of the threads and returns what it made; `None` if
    /// it panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        if self.started == 0 {
            return tokio::task::spawn_blocking(work).await.ok();
        }
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.send(job).ok()?;
        result.await.ok()
    }
}

/// One thread: runs jobs until the sending side is gone. A job that panics
/// fails alone (its caller hears nothing back); the thread goes on.
fn serve(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => {
                let _ = catch_unwind(AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_and_a_panic_fails_only_its_own() {
        let workers = Workers::new(2, "test");
        assert_eq!(workers.run(|| 6 * 7).await, Some(42));
        let panicked: Option<()> = workers.run(|| panic!("a job that breaks")).await;
        assert_eq!(panicked, None);
        let names = workers
            .run(|| std::thread::current().name().map(str::to_owned))
            .await;
        assert!(matches!(names, Some(Some(name)) if name.starts_with("test-")));
        assert_eq!(workers.run(|| 1).await, Some(1), "the thread goes on");
    }
}
