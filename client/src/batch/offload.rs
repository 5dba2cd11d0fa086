//! One trip to a blocking thread for a batch of items (small files to
//! write, files to check), with a panic in it reported for each item, never
//! dropped.

use std::sync::Arc;

use crate::error::{Error, WorkerError};

/// Runs `work` on each item, in order, on one blocking thread: one trip
/// for a batch of small files. If that thread panics, every item fails with
/// the panic as its cause; none is dropped.
pub(super) async fn blocking_each<T, R>(
    items: Vec<T>,
    work: impl Fn(&T) -> R + Send + 'static,
) -> Vec<(T, Result<R, Error>)>
where
    T: Clone + Send + Sync + 'static,
    R: Send + 'static,
{
    let items = Arc::new(items);
    let shared = Arc::clone(&items);
    let done = tokio::task::spawn_blocking(move || shared.iter().map(work).collect::<Vec<_>>());
    let done = done.await;
    // The thread's handle on the items ended with it, panic or not: they
    // are this task's alone again (a copy only if that ever failed).
    let items = Arc::try_unwrap(items).unwrap_or_else(|items| items.as_ref().clone());
    match done {
        Ok(results) => items.into_iter().zip(results.into_iter().map(Ok)).collect(),
        Err(err) => {
            let err = Arc::new(err);
            let failed = |item| {
                (
                    item,
                    Err(Error::Worker(WorkerError::Task(Arc::clone(&err)))),
                )
            };
            items.into_iter().map(failed).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Chain;

    #[tokio::test]
    async fn a_panicked_worker_fails_every_file_it_had() {
        let done = blocking_each(vec![1, 2, 3], |n| {
            assert!(*n != 2, "a file that breaks the worker");
            n * 10
        })
        .await;
        assert_eq!(done.len(), 3, "no file dropped");
        for (item, result) in &done {
            assert!(
                matches!(result, Err(Error::Worker(_))),
                "{item}: {result:?}"
            );
            let err = result.as_ref().err().map(|err| Chain(err).to_string());
            assert!(
                err.as_deref().is_some_and(
                    |e| e.starts_with("a worker thread failed: ") && e.contains("panicked")
                ),
                "{err:?}"
            );
        }
        let fine = blocking_each(vec![1, 2], |n| n * 10).await;
        let values: Vec<_> = fine.into_iter().map(|(n, r)| (n, r.ok())).collect();
        assert_eq!(values, [(1, Some(10)), (2, Some(20))]);
    }
}
