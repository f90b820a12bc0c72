//! Work on all cores, results in order, memory bounded: `make` compresses delta and image
//! frames with this. Batches (compress 8, append 8, compress the next 8) left a core idle
//! while the slowest group of each batch finished; frames differ in cost by 10x or more (a
//! group with 2 MiB of bases against one without), and on 2 cores the compression ran at
//! 1.8 cores instead of 2.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

/// Runs `work` on every item, on `workers` threads, and hands the results to `take` in the
/// items' order. At most `window` items are started and not yet taken, which bounds the
/// results held at once. The first error (of `work`, in item order, or of `take`) stops the
/// run: no item starts after it, and it is returned once the items under way have finished.
pub fn map_in_order<T, R, E>(
    items: &[T],
    workers: usize,
    window: usize,
    work: impl Fn(&T) -> Result<R, E> + Sync,
    mut take: impl FnMut(usize, R) -> Result<(), E>,
) -> Result<(), E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let window = window.max(1);
    let progress = Mutex::new(Progress {
        next: 0,
        taken: 0,
        stopped: false,
    });
    let ready = Condvar::new();
    let (done, results) = mpsc::channel::<(usize, Result<R, E>)>();
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1).min(items.len()) {
            let done = done.clone();
            let (progress, ready, work) = (&progress, &ready, &work);
            scope.spawn(move || loop {
                let item = {
                    let mut state = progress.lock().unwrap_or_else(|e| e.into_inner());
                    while !state.stopped
                        && state.next < items.len()
                        && state.next >= state.taken + window
                    {
                        state = ready.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                    if state.stopped || state.next >= items.len() {
                        return;
                    }
                    state.next += 1;
                    state.next - 1
                };
                if done.send((item, work(&items[item]))).is_err() {
                    return;
                }
            });
        }
        drop(done);
        let stop = || {
            progress.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
            ready.notify_all();
        };
        let mut waiting: BTreeMap<usize, Result<R, E>> = BTreeMap::new();
        let mut taken = 0;
        while taken < items.len() {
            // A worker that panicked sends nothing; once all are gone, `recv` fails and the
            // scope passes the panic on.
            let Ok((item, result)) = results.recv() else {
                break;
            };
            waiting.insert(item, result);
            while let Some(result) = waiting.remove(&taken) {
                if let Err(error) = result.and_then(|value| take(taken, value)) {
                    stop();
                    return Err(error);
                }
                taken += 1;
                progress.lock().unwrap_or_else(|e| e.into_inner()).taken = taken;
                ready.notify_all();
            }
        }
        Ok(())
    })
}

struct Progress {
    /// The next item to start.
    next: usize,
    /// How many results `take` has had.
    taken: usize,
    stopped: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn results_come_in_order_whatever_order_they_finish_in() {
        let items: Vec<u64> = (0..50).collect();
        let mut seen = Vec::new();
        map_in_order(
            &items,
            4,
            6,
            |&n| {
                // Early items take longest.
                std::thread::sleep(std::time::Duration::from_micros((50 - n) * 200));
                Ok::<_, ()>(n * 10)
            },
            |i, value| {
                seen.push((i, value));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            (0..50).map(|n| (n as usize, n * 10)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn no_more_than_the_window_is_started_and_not_taken() {
        let items: Vec<usize> = (0..40).collect();
        let started = AtomicUsize::new(0);
        let taken = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        map_in_order(
            &items,
            3,
            5,
            |&n| {
                let ahead =
                    started.fetch_add(1, Ordering::SeqCst) + 1 - taken.load(Ordering::SeqCst);
                most.fetch_max(ahead, Ordering::SeqCst);
                // The first item is slow: without the window, the other workers would run
                // through all the rest before it is taken.
                let micros = if n == 0 { 30_000 } else { 300 };
                std::thread::sleep(std::time::Duration::from_micros(micros));
                Ok::<_, ()>(())
            },
            |_, ()| {
                taken.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), 40);
        assert!(
            most.load(Ordering::SeqCst) <= 5,
            "{} ahead",
            most.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn the_first_error_in_item_order_stops_the_run() {
        let items: Vec<usize> = (0..1000).collect();
        let started = AtomicUsize::new(0);
        let mut taken = Vec::new();
        let result = map_in_order(
            &items,
            2,
            4,
            |&n| {
                started.fetch_add(1, Ordering::SeqCst);
                if n == 7 || n == 9 {
                    Err(n)
                } else {
                    Ok(n)
                }
            },
            |i, _| {
                taken.push(i);
                Ok(())
            },
        );
        assert_eq!(result, Err(7));
        assert_eq!(taken, (0..7).collect::<Vec<_>>());
        assert!(started.load(Ordering::SeqCst) <= 7 + 4);
    }

    #[test]
    fn an_error_of_take_stops_the_run() {
        let items = vec![1, 2, 3, 4, 5];
        let result = map_in_order(
            &items,
            2,
            2,
            |&n| Ok(n),
            |i, _| if i == 2 { Err("full") } else { Ok(()) },
        );
        assert_eq!(result, Err("full"));
    }

    #[test]
    fn no_items_no_calls() {
        let items: Vec<u8> = Vec::new();
        map_in_order(
            &items,
            2,
            2,
            |_| -> Result<(), ()> { unreachable!() },
            |_, ()| unreachable!(),
        )
        .unwrap();
    }
}
