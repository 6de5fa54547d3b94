//! Shared memory: a small file mapped MAP_SHARED by master and worker.

use std::io;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::path::Path;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// Types that may live in memory shared between processes: plain `#[repr(C)]`
/// structs of atomics, valid when all-zero, with no pointers or Drop.
///
/// # Safety
/// Implementors promise all of the above; every access must go through atomics
/// because the other process writes concurrently.
pub unsafe trait SharedSafe: Sync {}

/// A `T` in a file-backed MAP_SHARED mapping whose file is already unlinked.
pub struct SharedCell<T: SharedSafe> {
    ptr: NonNull<T>,
    _marker: PhantomData<T>,
}

impl<T: SharedSafe> SharedCell<T> {
    /// Create a zeroed `T` in a fresh file under `dir`, map it, and unlink the
    /// file at once: the mapping keeps the memory alive and nothing is left in
    /// `dir` even if every process is SIGKILLed.
    pub fn create_in(dir: &Path) -> io::Result<SharedCell<T>> {
        let template = dir.join("forkhorn-slot-XXXXXX");
        let (fd, path) = nix::unistd::mkstemp(&template).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "cannot create a heartbeat file in {}: {e} (is the worker tmp dir writable? see --worker-tmp-dir)",
                    dir.display()
                ),
            )
        })?;
        let _ = nix::unistd::unlink(&path);
        let len = std::mem::size_of::<T>().max(1);
        nix::unistd::ftruncate(&fd, len as i64)?;
        let len = NonZeroUsize::new(len).unwrap_or(NonZeroUsize::MIN);
        // SAFETY: a fresh shared mapping of a file we just sized; no other
        // mapping aliases it as a non-atomic type, and the file's zeroed bytes
        // are a valid T (SharedSafe).
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }?;
        Ok(SharedCell {
            ptr: ptr.cast(),
            _marker: PhantomData,
        })
    }
}

impl<T: SharedSafe> std::ops::Deref for SharedCell<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping lives as long as self and holds a valid T; all
        // of T's fields are atomics, so shared references are sound even while
        // the other process writes.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: SharedSafe> Drop for SharedCell<T> {
    fn drop(&mut self) {
        // SAFETY: we own this mapping of exactly size_of::<T>() bytes, and no
        // reference to it outlives self.
        let _ = unsafe { munmap(self.ptr.cast(), std::mem::size_of::<T>().max(1)) };
    }
}

// SAFETY: T is Sync (SharedSafe: Sync) and the mapping is process-wide.
unsafe impl<T: SharedSafe> Send for SharedCell<T> {}
// SAFETY: as above.
unsafe impl<T: SharedSafe> Sync for SharedCell<T> {}
