//! The thread behind a detached Python stream: it takes the GIL for each
//! `next()` of the app's iterator and hands the item to the worker's
//! stream channel with the GIL released, while the worker goes on serving
//! other requests and writes the items to the client as they come.
//!
//! It stops when the iterator ends (the stream ends properly), raises (the
//! client's response is cut off and the error logged), or the channel
//! closes (the client left, the stream idled out, or the worker has too
//! many streams). Dropping the items calls the iterable's `close()`.

use super::body::Items;
use crate::stream::StreamSender;

pub(crate) fn start(items: Items, tx: StreamSender) {
    // Signals stay with the worker's main thread, whose handlers act on the
    // request in flight.
    let mask = crate::sys::signals::block_all();
    let spawned = std::thread::Builder::new()
        .name("wsgi-stream".into())
        .spawn(move || pump(items, tx));
    if let Ok(mask) = mask {
        let _ = crate::sys::signals::restore_mask(&mask);
    }
    if let Err(e) = spawned {
        // The items were moved into the closure and dropped with it: the
        // receiver sees the sender gone and the stream ends empty.
        log::error!("cannot start a thread for the stream (it ends empty): {e}");
    }
}

fn pump(mut items: Items, tx: StreamSender) {
    let pending = std::mem::take(&mut items.pending);
    if !pending.is_empty() && tx.send(pending).is_err() {
        return;
    }
    loop {
        match items.next_chunk() {
            Ok(Some(chunk)) => {
                if tx.send(chunk).is_err() {
                    log::debug!(
                        "stream of {} ended: the client left or the worker closed it",
                        items.label()
                    );
                    return;
                }
            }
            Ok(None) => return,
            // Logged by next_chunk.
            Err(_) => {
                tx.abort();
                return;
            }
        }
    }
}
