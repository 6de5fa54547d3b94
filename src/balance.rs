//! The accept balance: how many connections each worker holds, in one small
//! shared table, so that a worker holding more than a sibling leaves the next
//! connection to that sibling.
//!
//! Every worker waits on the same listening socket and the kernel wakes them
//! all for a new connection; whichever runs first takes it. When a burst of
//! connections arrives at once (a load balancer filling its pool, a benchmark
//! starting), one worker can take nearly all of them while its sibling has
//! not yet been scheduled. Keep-alive connections stay where they land, so
//! the skew lasts as long as they do, and their requests queue behind each
//! other on one worker while another idles.
//!
//! The table is advice, never a lock: a worker that defers waits at most
//! `DEFER_FOR` for a sibling to take the connection and then takes it itself,
//! so a sibling that is stopped or wedged costs a few short delays, not a
//! stall. A sibling busy in a long request leaves the table until it is
//! done, and a dead one is removed by the master.
//!
//! Beside the table sits the hand-off channel: a unix socket pair every
//! worker inherits, through which a worker busy with a long request passes
//! its idle keep-alive connections (`worker/handoff.rs`) for whichever
//! worker is free first to take, as it would take a new connection from a
//! listener.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::fdpass::FdChannel;
use crate::sys::shm::{SharedCell, SharedSafe};

/// Workers that take part; any beyond this accept as if alone.
pub const SEATS: usize = 256;

/// How long a worker leaves a waiting connection to a sibling holding fewer.
pub const DEFER_FOR: Duration = Duration::from_millis(20);

/// A worker defers only to a sibling holding at least this many fewer
/// connections (with 16 connections on two workers, 9/7 at worst), or an
/// eighth fewer when that is more: with hundreds of connections each, a
/// difference of two is noise and deferring on it would only slow down
/// taking them.
const SLACK: u32 = 2;
const SLACK_SHARE: u32 = 8;

/// One worker's seat, alone on its cache line so that a worker updating its
/// count does not slow down siblings reading theirs.
#[repr(C, align(64))]
struct Seat {
    /// Connections held plus one; 0 means nobody sits here (the all-zero
    /// table, as created, is empty).
    held_plus_one: AtomicU32,
}

/// The shared layout.
#[repr(C)]
pub struct Table {
    /// One past the highest seat the master has handed out: readers scan no
    /// further than this.
    high_water: AtomicU32,
    seats: [Seat; SEATS],
}

// SAFETY: only atomics, valid when all-zero, no pointers or Drop.
unsafe impl SharedSafe for Table {}

/// The table and the hand-off channel, made by the master before it forks
/// and inherited by every worker. The master itself never reads or writes
/// either; its copy of the channel keeps connections in it alive while no
/// worker is there to take them (between a worker's death and its
/// replacement).
#[derive(Clone)]
pub struct Balance {
    table: Arc<SharedCell<Table>>,
    handoff: Arc<FdChannel>,
}

impl Balance {
    /// Create an empty table in a fresh file under `dir` (the worker tmp
    /// dir), and the hand-off channel.
    pub fn create_in(dir: &Path) -> std::io::Result<Balance> {
        Ok(Balance {
            table: Arc::new(SharedCell::create_in(dir)?),
            handoff: Arc::new(FdChannel::new().map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot create the connection hand-off channel: {e}"),
                )
            })?),
        })
    }

    /// The channel idle connections are handed between workers through.
    pub fn handoff(&self) -> &Arc<FdChannel> {
        &self.handoff
    }

    /// The master: the lowest seat not in `taken`, for a worker about to be
    /// forked; None when all are taken.
    pub fn free_seat(&self, taken: impl Iterator<Item = usize> + Clone) -> Option<usize> {
        let seat = (0..SEATS).find(|i| !taken.clone().any(|t| t == *i))?;
        let high = self.table.high_water.load(Ordering::Relaxed) as usize;
        if seat + 1 > high {
            self.table
                .high_water
                .store((seat + 1) as u32, Ordering::Relaxed);
        }
        Some(seat)
    }

    /// Mark `seat` as held by a worker with `held` connections.
    pub fn publish(&self, seat: usize, held: usize) {
        if let Some(s) = self.table.seats.get(seat) {
            let v = u32::try_from(held).unwrap_or(u32::MAX - 1) + 1;
            s.held_plus_one.store(v, Ordering::Relaxed);
        }
    }

    /// Empty `seat`: its worker takes no more connections (it is draining)
    /// or is gone (the master reaped it).
    pub fn vacate(&self, seat: usize) {
        if let Some(s) = self.table.seats.get(seat) {
            s.held_plus_one.store(0, Ordering::Relaxed);
        }
    }

    /// Whether some other seated worker holds enough fewer connections than
    /// `held` (see `SLACK`) that the worker in `seat` should leave the next
    /// connection to it.
    pub fn sibling_has_fewer(&self, seat: usize, held: usize) -> bool {
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        if held < SLACK {
            return false;
        }
        let high = (self.table.high_water.load(Ordering::Relaxed) as usize).min(SEATS);
        self.table.seats[..high].iter().enumerate().any(|(i, s)| {
            let v = s.held_plus_one.load(Ordering::Relaxed);
            let other = v.wrapping_sub(1);
            i != seat && v != 0 && other.saturating_add(SLACK.max(other / SLACK_SHARE)) <= held
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Balance {
        Balance::create_in(&std::env::temp_dir()).expect("balance table")
    }

    #[test]
    fn defers_only_to_a_seated_sibling_holding_fewer() {
        let b = table();
        let a = b.free_seat([].into_iter()).expect("seat");
        let c = b.free_seat([a].into_iter()).expect("seat");
        assert_eq!((a, c), (0, 1));
        b.publish(a, 5);
        // The sibling is not seated yet: nobody to defer to.
        assert!(!b.sibling_has_fewer(a, 5));
        b.publish(c, 4);
        assert!(!b.sibling_has_fewer(a, 5), "within the slack");
        b.publish(c, 3);
        assert!(b.sibling_has_fewer(a, 5));
        assert!(
            !b.sibling_has_fewer(c, 3),
            "the one holding fewer never defers"
        );
        b.vacate(c);
        assert!(
            !b.sibling_has_fewer(a, 5),
            "a vacated seat is not a sibling"
        );
        b.publish(c, 400);
        assert!(
            !b.sibling_has_fewer(a, 449),
            "an eighth more is within the slack"
        );
        assert!(b.sibling_has_fewer(a, 450));
    }

    #[test]
    fn seats_are_reused_lowest_first() {
        let b = table();
        assert_eq!(b.free_seat([0, 1, 3].into_iter()), Some(2));
        assert_eq!(
            b.free_seat((0..SEATS).collect::<Vec<_>>().into_iter()),
            None
        );
    }
}
