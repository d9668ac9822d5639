//! llama.cpp's direct writes to stderr, routed through the process's (redacting) logger.
//!
//! Most llama.cpp and ggml messages go through their log callbacks, which `llama_backend`
//! sends to `tracing`. A few are written with `fprintf(stderr, …)` and bypass the callbacks:
//! the grammar parser prints the whole grammar it refused (a grammar built from a client's
//! JSON schema holds the schema's `const`, `enum` and `pattern` values, which can be PHI), the
//! schema converter prints its warnings (which quote patterns), and ggml prints its assertion
//! failures. On Linux the C library's `stderr` stream is replaced by one whose writes become
//! `tracing` events, line by line and in the writing thread (so a message written just before
//! an abort is not lost), where the subscriber's redacting writer handles them like every
//! other log line. Rust's own stderr (file descriptor 2) is untouched.

/// The `tracing` target of the lines llama.cpp wrote to stderr.
pub const TARGET: &str = "wardgate::llama_stderr";

/// Longest line logged; llama.cpp prints whole grammars, which can be megabytes.
const MAX_LINE: usize = 1024;

/// Installs the redirection once per process; later calls do nothing. Returns whether C's
/// `stderr` is now routed (false where the platform is not supported).
pub fn route_c_stderr() -> bool {
    static ROUTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROUTED.get_or_init(imp::install)
}

/// Splits written bytes into lines and logs each complete one.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    fn push(&mut self, data: &[u8]) {
        for chunk in data.split_inclusive(|b| *b == b'\n') {
            let room = (MAX_LINE * 4).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.ends_with(b"\n") {
                let line = std::mem::take(&mut self.buf);
                emit(&line);
            }
        }
    }
}

fn emit(line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    let mut end = text.len().min(MAX_LINE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let truncated = end < text.len();
    tracing::warn!(target: TARGET, truncated, "llama.cpp: {}", &text[..end]);
}

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "replacing the C library's stderr stream is an FFI call; the engine is the FFI seam"
)]
mod imp {
    use std::ffi::{c_char, c_int, c_void};
    use std::sync::Mutex;

    use super::Lines;

    type ReadFn = unsafe extern "C" fn(*mut c_void, *mut c_char, usize) -> isize;
    type WriteFn = unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> isize;
    type SeekFn = unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int;
    type CloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;

    /// glibc's and musl's `cookie_io_functions_t`.
    #[repr(C)]
    struct CookieIo {
        read: Option<ReadFn>,
        write: Option<WriteFn>,
        seek: Option<SeekFn>,
        close: Option<CloseFn>,
    }

    const IONBF: c_int = 2;

    unsafe extern "C" {
        static mut stderr: *mut c_void;
        fn fopencookie(cookie: *mut c_void, mode: *const c_char, io: CookieIo) -> *mut c_void;
        fn setvbuf(stream: *mut c_void, buf: *mut c_char, mode: c_int, size: usize) -> c_int;
    }

    static LINES: Mutex<Lines> = Mutex::new(Lines { buf: Vec::new() });

    unsafe extern "C" fn write(_: *mut c_void, data: *const c_char, len: usize) -> isize {
        if data.is_null() || len == 0 {
            return 0;
        }
        // SAFETY: the C library passes a buffer of `len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        // Nothing may unwind into C; a failure to log is a dropped line.
        let _ = std::panic::catch_unwind(|| {
            LINES
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(bytes);
        });
        len as isize
    }

    pub(super) fn install() -> bool {
        let io = CookieIo {
            read: None,
            write: Some(write),
            seek: None,
            close: None,
        };
        // SAFETY: fopencookie copies `io`; the cookie is unused. The new stream is unbuffered
        // so each write reaches `write` at once. Assigning the C library's `stderr` variable
        // is how C programs redirect it (glibc documents it as an lvalue); it happens once,
        // before llama.cpp is initialised.
        unsafe {
            let stream = fopencookie(std::ptr::null_mut(), c"w".as_ptr(), io);
            if stream.is_null() {
                return false;
            }
            setvbuf(stream, std::ptr::null_mut(), IONBF, 0);
            stderr = stream;
        }
        true
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn install() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_long_ones_bounded() {
        let mut l = Lines::default();
        l.push(b"a partial ");
        assert_eq!(l.buf, b"a partial ");
        l.push(b"line\nnext");
        assert_eq!(l.buf, b"next");
        l.push(&vec![b'x'; MAX_LINE * 10]);
        assert_eq!(l.buf.len(), MAX_LINE * 4);
        l.push(b"\n");
        assert!(l.buf.is_empty());
    }
}
