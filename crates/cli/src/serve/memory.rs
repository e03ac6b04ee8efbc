//! How `baton serve` gives memory back to the system.
//!
//! The binary allocates with mimalloc (`main.rs`): a request makes many small allocations,
//! which glibc's allocator served at a seventh of the server's time; mimalloc serves them
//! faster (`baton bench throughput`: +10 to +30 %, BENCHMARKS.md). mimalloc 3 keeps freed pages
//! for a second before handing them back ([`PURGE_DELAY_MS`] shortens that) and may back them
//! with transparent huge pages (off at build time, feature `no_thp`). The option is set once
//! the process runs, after mimalloc scheduled its first purges under the default delay; a
//! forced collection then clears them, without which the peak RSS stayed as high as with the
//! default (129–162 MiB under `baton bench throughput --child`, against 105–108 MiB with it,
//! 165–192 MiB with mimalloc's defaults and 119–151 MiB with glibc's allocator).
//! mimalloc carries out a due purge only when a thread next frees a page or collects, so
//! [`trim_loop`] collects too: a server idle after a burst hands the burst's pages back.
//!
//! SQLite allocates through glibc's `malloc`, which keeps what a thread frees in that thread's
//! arena (by default up to 8 per core) and returns pages to the system only from the top of a
//! heap. After a burst of big reads most of what was freed stays resident, spread among
//! arenas, although nothing uses it: `baton bench reads` (BENCHMARKS.md) measured a server
//! holding 196 MiB 10 s after its reads, of which `malloc_trim` handed back 70 MiB. So the
//! server uses one arena per core ([`ARENAS_PER_CORE`]), and every [`TRIM_INTERVAL`] asks glibc
//! to return the whole free pages of every arena (`malloc_trim(0)`, which takes milliseconds).

use std::time::Duration;

/// Allocator arenas per core (glibc's default is 8): fewer arenas, less memory stranded in
/// them, at the cost of threads sharing one more often.
pub const ARENAS_PER_CORE: usize = 1;
/// How often free memory is handed back to the system.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);
/// How long mimalloc keeps freed pages before handing them back (its default is 1,000 ms).
pub const PURGE_DELAY_MS: i64 = 1;
/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (not among `libmimalloc-sys`'s named
/// constants).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the allocators up; call first, before other threads start.
pub fn configure() {
    // SAFETY: mimalloc's options are plain values, set here before any other thread runs;
    // a collection only hands back memory no allocation holds.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _);
        libmimalloc_sys::mi_collect(true);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = (cores * ARENAS_PER_CORE).max(2);
        // SAFETY: mallopt sets a parameter of the allocator under its lock; it touches no
        // memory of ours.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas as libc::c_int);
        }
    }
}

/// Hands free memory back to the system every [`TRIM_INTERVAL`], until the runtime stops.
pub async fn trim_loop() {
    loop {
        tokio::time::sleep(TRIM_INTERVAL).await;
        // glibc's trim walks every arena under its lock: off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// What both allocators hold free, handed back. mimalloc carries out a purge whose delay has
/// passed only when some thread next frees a page or collects: a server idle after a burst
/// would keep the burst's pages, so a collection here carries them out.
fn trim() {
    // SAFETY: a collection only hands back memory no allocation holds.
    unsafe { libmimalloc_sys::mi_collect(false) };
    // SAFETY: malloc_trim is thread-safe and only releases memory no allocation holds.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}
