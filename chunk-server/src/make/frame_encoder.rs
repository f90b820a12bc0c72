//! The delta frame encoder of `make`: one zstd context per worker thread, kept from frame to
//! frame. A fresh context per frame (what `compress_with_prefix` does) allocates and clears
//! its match tables every time, tens of MiB from level 16 up: on the bench's ext4 pair that
//! was 1.5 million page faults and a tenth of make's time. The frames are the same bytes:
//! the same parameters (`FrameParameters`), the same prefix, and zstd's output does not
//! depend on what a context compressed before (a unit test holds both encoders to it).
//!
//! zstd-safe ties a referenced prefix to the context's whole lifetime, so a kept context
//! cannot reference each frame's own prefix through it; this module calls zstd directly,
//! and the prefix is referenced only within one call (zstd drops it at the end of the frame,
//! and the context is reset before the call returns either way).

use std::cell::RefCell;
use std::io;
use std::ptr::NonNull;

use diffota_format::frame_codec::FrameParameters;
use zstd::zstd_safe::zstd_sys;

/// A zstd compression context owned by one thread.
struct Context(NonNull<zstd_sys::ZSTD_CCtx>);

impl Context {
    fn create() -> io::Result<Context> {
        // SAFETY: ZSTD_createCCtx has no preconditions; a null result is checked.
        let raw = unsafe { zstd_sys::ZSTD_createCCtx() };
        NonNull::new(raw)
            .map(Context)
            .ok_or_else(|| io::Error::other("zstd could not allocate a compression context"))
    }

    fn check(code: usize) -> io::Result<usize> {
        // SAFETY: ZSTD_isError and ZSTD_getErrorName take any value; the name is a static
        // NUL-terminated string.
        unsafe {
            if zstd_sys::ZSTD_isError(code) != 0 {
                let name = std::ffi::CStr::from_ptr(zstd_sys::ZSTD_getErrorName(code));
                return Err(io::Error::other(name.to_string_lossy().into_owned()));
            }
        }
        Ok(code)
    }

    fn set(&mut self, parameter: zstd_sys::ZSTD_cParameter, value: i64) -> io::Result<()> {
        let value = i32::try_from(value).map_err(|_| {
            io::Error::other(format!("zstd parameter value {value} is out of range"))
        })?;
        // SAFETY: the context is valid (owned, not freed); parameters are checked by zstd.
        Self::check(unsafe {
            zstd_sys::ZSTD_CCtx_setParameter(self.0.as_ptr(), parameter, value)
        })?;
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        // SAFETY: the context is valid; a reset of session and parameters also drops any
        // referenced prefix.
        Self::check(unsafe {
            zstd_sys::ZSTD_CCtx_reset(
                self.0.as_ptr(),
                zstd_sys::ZSTD_ResetDirective::ZSTD_reset_session_and_parameters,
            )
        })?;
        Ok(())
    }

    fn compress(
        &mut self,
        content: &[u8],
        prefix: &[u8],
        parameters: FrameParameters,
    ) -> io::Result<Vec<u8>> {
        use zstd_sys::ZSTD_cParameter as P;
        self.reset()?;
        self.set(P::ZSTD_c_compressionLevel, parameters.level.into())?;
        if let Some(min_match) = parameters.min_match {
            self.set(P::ZSTD_c_minMatch, min_match.into())?;
        }
        self.set(P::ZSTD_c_windowLog, parameters.window_log.into())?;
        self.set(P::ZSTD_c_contentSizeFlag, 1)?;
        let result = self.compress_referencing(content, prefix);
        // Whatever happened, the context references nothing once this returns.
        self.reset()?;
        result
    }

    fn compress_referencing(&mut self, content: &[u8], prefix: &[u8]) -> io::Result<Vec<u8>> {
        if !prefix.is_empty() {
            // SAFETY: `prefix` outlives this call, and the context references it only until
            // the end of the one frame compressed below (and the caller resets it after).
            Self::check(unsafe {
                zstd_sys::ZSTD_CCtx_refPrefix(self.0.as_ptr(), prefix.as_ptr().cast(), prefix.len())
            })?;
        }
        // SAFETY: ZSTD_compressBound has no preconditions.
        let bound = unsafe { zstd_sys::ZSTD_compressBound(content.len()) };
        let mut out: Vec<u8> = Vec::with_capacity(bound);
        // SAFETY: `out` has `bound` bytes of capacity, enough for any frame of `content`;
        // zstd writes at most that many and returns how many it wrote, which are then the
        // initialised length.
        let written = Self::check(unsafe {
            zstd_sys::ZSTD_compress2(
                self.0.as_ptr(),
                out.as_mut_ptr().cast(),
                out.capacity(),
                content.as_ptr().cast(),
                content.len(),
            )
        })?;
        // SAFETY: zstd initialised `written` <= capacity bytes.
        unsafe { out.set_len(written) };
        Ok(out)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context was created by ZSTD_createCCtx and is freed once.
        unsafe {
            zstd_sys::ZSTD_freeCCtx(self.0.as_ptr());
        }
    }
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// One delta frame of `content` against `prefix` at `level`: the same bytes as
/// `diffota_format::frame_codec::compress_with_prefix`, with this thread's kept context.
pub fn compress_frame(content: &[u8], prefix: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let parameters = FrameParameters::new(level, prefix.len(), content.len());
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Context::create()?);
        }
        let context = slot.as_mut().expect("created above");
        context.compress(content, prefix, parameters)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffota_format::frame_codec::{compress_with_prefix, decompress_with_prefix};

    fn sample(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 64 < 40 {
                    b"abcdefgh"[(state >> 61) as usize]
                } else {
                    (state >> 56) as u8
                }
            })
            .collect()
    }

    #[test]
    fn a_kept_context_makes_the_same_frames_as_a_fresh_one() {
        let base = sample(1, 300_000);
        let mut content = base[10_000..200_000].to_vec();
        content.extend(sample(2, 50_000));
        // Frames of different levels, sizes and prefixes, one after the other on one context.
        for (level, prefix) in [
            (16, &base[..]),
            (12, &base[..100_000]),
            (19, &[][..]),
            (16, &base[50_000..]),
            (3, &base[..]),
        ] {
            let kept = compress_frame(&content, prefix, level).unwrap();
            assert_eq!(
                kept,
                compress_with_prefix(&content, prefix, level).unwrap(),
                "level {level}"
            );
            assert_eq!(
                decompress_with_prefix(&kept, prefix, content.len()).unwrap(),
                content
            );
        }
    }

    #[test]
    fn an_empty_content_is_a_frame_too() {
        let frame = compress_frame(&[], b"prefix", 16).unwrap();
        assert_eq!(frame, compress_with_prefix(&[], b"prefix", 16).unwrap());
    }
}
