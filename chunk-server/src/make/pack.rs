//! The new pack of a make: frames appended in order, named by the BLAKE3 of its bytes.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use diffota_format::PackRef;

use crate::store::{io_error, StoreError};

/// The new pack being written: plain frames first, then any delta frames. Its name is the
/// BLAKE3 of its bytes, known when it is finished.
pub(crate) struct PackWriter<'a> {
    writer: HashingWriter<BufWriter<&'a mut std::fs::File>>,
    path: PathBuf,
}

impl<'a> PackWriter<'a> {
    /// A pack written into `file` (a temporary file in `path`, the packs directory).
    pub(crate) fn new(file: &'a mut std::fs::File, path: PathBuf) -> PackWriter<'a> {
        PackWriter {
            writer: HashingWriter::new(BufWriter::with_capacity(1 << 20, file)),
            path,
        }
    }

    /// Where the pack is being written (for error messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn append(&mut self, frame: &[u8]) -> Result<u64, StoreError> {
        let at = self.writer.written;
        self.writer.write_all(frame).map_err(io_error(&self.path))?;
        Ok(at)
    }

    /// Makes everything appended readable through another handle of the file.
    pub(crate) fn flush(&mut self) -> Result<(), StoreError> {
        self.writer.flush().map_err(io_error(&self.path))
    }

    /// The pack's reference; None when nothing was written.
    pub(super) fn finish(mut self) -> Result<Option<PackRef>, StoreError> {
        self.flush()?;
        let length = self.writer.written;
        Ok((length > 0).then(|| PackRef {
            id: *self.writer.hasher.finalize().as_bytes(),
            length,
        }))
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
