//! Upload stage (async): parts from the channel in, a completed multipart upload out.
//!
//! Up to `in_flight` parts travel at once (fewer when the memory budget is reached: each part
//! holds its reservation until it is stored). The first failed part (after the store's retries)
//! ends the stage: the receiver is dropped, which makes the producer's next `write` fail, and
//! the caller aborts the upload. Completing is the caller's decision too, taken only once the
//! producing stages have finished without error — never here, and never in a `Drop`.

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::Receiver;

use super::parts::Part;
use crate::store::{DynStore, PartReceipt, Result};

/// Uploads every part received until the channel closes; returns the receipts in part order.
pub async fn upload_parts(
    store: DynStore,
    key: String,
    upload_id: String,
    mut rx: Receiver<Part>,
    in_flight: usize,
    // Told the number of parts in flight whenever it changes.
    progress: impl Fn(usize) + Send,
) -> Result<Vec<PartReceipt>> {
    let in_flight = in_flight.max(1);
    let mut running = FuturesUnordered::new();
    let mut receipts = Vec::new();
    let mut number = 0u32;
    let mut open = true;
    loop {
        if open && running.len() < in_flight {
            tokio::select! {
                done = running.next(), if !running.is_empty() => {
                    receipts.push(done.expect("non-empty")?);
                    progress(running.len());
                }
                part = rx.recv() => match part {
                    Some(Part { data, reservation }) => {
                        number += 1;
                        let (store, key, upload_id) = (store.clone(), key.clone(), upload_id.clone());
                        running.push(async move {
                            // MaxUploadRate: the part waits for its share of the process's rate.
                            super::rate::pace(data.len() as u64).await;
                            let stored = store.upload_part(&key, &upload_id, number, data).await;
                            // Its memory is free once the part is stored (or given up).
                            drop(reservation);
                            stored
                        });
                        progress(running.len());
                    }
                    None => open = false,
                },
            }
        } else {
            match running.next().await {
                Some(done) => {
                    receipts.push(done?);
                    progress(running.len());
                }
                None if !open => break,
                None => {}
            }
        }
    }
    receipts.sort_by_key(|r| r.number);
    Ok(receipts)
}
