//! Stage threads: bytes written in on one thread, read out by a stage running on its own
//! thread, over a bounded queue of blocks — as a pipe joins two processes of a shell pipeline.
//!
//! A [`StageWriter`] is the writing end: `write` fills a block and queues it (blocking while
//! the queue is full, which bounds memory per stage: see below); [`StageWriter::finish`]
//! marks the end and waits for the stage's result. The stage's body reads its [`Input`] to the
//! end and finishes its own output explicitly. Only a finished writer ends the input cleanly:
//! a writer dropped unfinished (the stage before it failed) makes the input fail, so no stage
//! ever finishes a stream that was cut short. A stage's error ends it, and the writer's next
//! write (or its finish) returns that error, so the first failure anywhere stops every stage
//! and nothing is committed.
//!
//! Blocks circulate: the reading side hands each block it is done with back to the writing
//! side, which fills it again, so a stream of any length allocates at most the queue's depth
//! plus 2 blocks.
//!
//! Recovery runs the other way round: [`spawn_reader`] starts a stage that writes into a
//! [`Pipe`] on its own thread (decryption, decompression), filling the blocks in place
//! ([`Pipe::fill_from`]), and this thread reads its output (a `BufRead`).
//! The stage's error is passed down the queue and returned by the reader's next read; a
//! dropped reader makes the stage's next write fail.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{JoinHandle, Scope};

/// Bytes per block handed between stages.
const BLOCK: usize = 256 * 1024;
/// Blocks queued per stage besides the one being filled and the one being processed.
const DEPTH: usize = 4;
/// The same for a recovery stage ([`spawn_reader`]). Its reader at the end, `tar -x`, reads in
/// bursts (it stops while it creates each file): deeper queues let decryption and
/// decompression go on meanwhile. `recover | tar -x` took about 3 % less time with 16 than with
/// 4, for 6 MiB more at most; backups keep 4, whose memory is what the target is tight on.
const READ_DEPTH: usize = 16;

/// The writing end of a queue of blocks into the next stage. Only [`Pipe::finish`] ends the
/// stream; a pipe dropped unfinished cuts it short, which the reading side sees as an error.
pub struct Pipe {
    tx: SyncSender<Msg>,
    /// Blocks the reading side is done with, to be filled again: no allocation, no page
    /// faults and no zeroing per block once the queue is primed.
    free: Receiver<Vec<u8>>,
    /// `BLOCK` bytes long; `filled` of them are data.
    block: Vec<u8>,
    filled: usize,
}

/// The writing end of a stage running on its own thread, whose result is `R`.
pub struct StageWriter<R> {
    name: &'static str,
    pipe: Option<Pipe>,
    thread: Option<JoinHandle<io::Result<R>>>,
}

/// What a stage reads: the blocks written to its [`Pipe`], until it is finished. It is a
/// `BufRead`, so that a decoder reads straight from the blocks.
pub struct Input {
    rx: Receiver<Msg>,
    back: SyncSender<Vec<u8>>,
    block: Vec<u8>,
    at: usize,
    ended: bool,
}

enum Msg {
    /// Data: the whole of the vector.
    Block(Vec<u8>),
    /// Sent by [`Pipe::finish`] only: the input is whole.
    End,
    /// The stage writing the input failed: its error, for the reader to return.
    Failed(io::Error),
}

/// A queue of `depth` blocks: its writing and its reading end.
fn queue(depth: usize) -> (Pipe, Input) {
    let (tx, rx) = sync_channel(depth);
    // At most depth + 2 blocks exist (the queue's, the one being filled, the one being read):
    // a new one is made only when none comes back, so this never fills.
    let (back, free) = sync_channel(depth + 2);
    let pipe = Pipe {
        tx,
        free,
        block: vec![0; BLOCK],
        filled: 0,
    };
    let input = Input {
        rx,
        back,
        block: Vec::new(),
        at: 0,
        ended: false,
    };
    (pipe, input)
}

impl Pipe {
    fn send(&mut self, msg: Msg) -> io::Result<()> {
        self.tx.send(msg).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the next stage stopped reading")
        })
    }

    /// Sends the filled part of the block, leaving the pipe without one.
    fn send_filled(&mut self) -> io::Result<()> {
        let mut block = std::mem::take(&mut self.block);
        block.truncate(std::mem::take(&mut self.filled));
        self.send(Msg::Block(block))
    }

    /// Sends the full block and takes the next one to fill.
    fn send_block(&mut self) -> io::Result<()> {
        // Sent before the next block is taken, so that a writer waiting for room holds no
        // block of its own besides the one it sends.
        let sent = self.send_filled();
        let mut next = self.free.try_recv().unwrap_or_else(|_| vec![0; BLOCK]);
        // Blocks come back whole (only `finish` sends a short one, and nothing is filled
        // after it): this only guards the slicing in `write` and `fill_from`.
        next.resize(BLOCK, 0);
        self.block = next;
        sent
    }

    /// Reads `from` to its end straight into the blocks (no copy through a buffer of its
    /// own); returns the number of bytes.
    pub fn fill_from(&mut self, from: &mut impl Read) -> io::Result<u64> {
        let mut total = 0;
        loop {
            match from.read(&mut self.block[self.filled..]) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    self.filled += n;
                    total += n as u64;
                    if self.filled == BLOCK {
                        self.send_block()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends what is left and the end of the stream.
    pub fn finish(mut self) -> io::Result<()> {
        // The last block goes without a next one taken (and zeroed) for nothing.
        if self.filled > 0 {
            self.send_filled()?;
        }
        self.send(Msg::End)
    }

    /// Ends the stream with `error`, which the reading side returns.
    fn fail(mut self, error: io::Error) {
        // If the reader is gone too, nobody is left to tell.
        let _ = self.send(Msg::Failed(error));
    }
}

impl Write for Pipe {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = (BLOCK - self.filled).min(data.len());
        self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
        self.filled += take;
        if self.filled == BLOCK {
            self.send_block()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<R: Send + 'static> StageWriter<R> {
    /// Starts `body` on a thread named `name`; it reads what is written to the returned writer.
    pub fn spawn(
        name: &'static str,
        body: impl FnOnce(&mut Input) -> io::Result<R> + Send + 'static,
    ) -> io::Result<StageWriter<R>> {
        let (pipe, mut input) = queue(DEPTH);
        let thread = std::thread::Builder::new()
            .name(format!("s3nap {name}"))
            .spawn(move || body(&mut input))?;
        Ok(StageWriter {
            name,
            pipe: Some(pipe),
            thread: Some(thread),
        })
    }

    /// The stage ended before reading everything: its own error is the cause.
    fn stopped(&mut self) -> io::Error {
        self.join()
            .err()
            .unwrap_or_else(|| io::Error::other(format!("the {} stage stopped reading", self.name)))
    }

    fn join(&mut self) -> io::Result<R> {
        self.pipe = None;
        let thread = self
            .thread
            .take()
            .ok_or_else(|| io::Error::other(format!("the {} stage already ended", self.name)))?;
        thread
            .join()
            .map_err(|_| io::Error::other(format!("the {} stage panicked", self.name)))?
    }

    /// Sends what is left and the end, and returns the stage's result.
    pub fn finish(mut self) -> io::Result<R> {
        let finished = match self.pipe.take() {
            Some(pipe) => pipe.finish(),
            None => Err(io::Error::other("finished twice")),
        };
        match finished {
            Ok(()) => self.join(),
            Err(_) => Err(self.stopped()),
        }
    }
}

impl<R: Send + 'static> Write for StageWriter<R> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let written = match &mut self.pipe {
            Some(pipe) => pipe.write(data),
            None => Err(io::Error::other("written after the end")),
        };
        written.map_err(|_| self.stopped())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts `body` on a thread of `scope` named `name`, writing into a [`Pipe`]; returns what it
/// writes, to be read on this thread. The body's error ends the returned input with that
/// error; returning `Ok` ends it cleanly. If the input is dropped, the body's next write fails
/// and the thread ends; the scope joins it.
pub fn spawn_reader<'scope>(
    scope: &'scope Scope<'scope, '_>,
    name: &'static str,
    body: impl FnOnce(&mut Pipe) -> io::Result<()> + Send + 'scope,
) -> io::Result<Input> {
    let (mut pipe, input) = queue(READ_DEPTH);
    std::thread::Builder::new()
        .name(format!("s3nap {name}"))
        .spawn_scoped(scope, move || match body(&mut pipe) {
            Ok(()) => {
                if let Err(e) = pipe.finish() {
                    log::debug!("{name}: {e}");
                }
            }
            Err(e) => pipe.fail(e),
        })?;
    Ok(input)
}

impl Input {
    /// Moves on to the next block, handing the finished one back to the writer; `false` at
    /// the end; an error when the writer went away unfinished.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        // Handed back before waiting, so that a reader waiting for a block holds none.
        let done = std::mem::take(&mut self.block);
        self.at = 0;
        if done.capacity() > 0 {
            // The writer may be gone (it failed or finished): then the block is just freed.
            let _ = self.back.try_send(done);
        }
        self.block = match self.rx.recv() {
            Ok(Msg::Block(block)) => block,
            Ok(Msg::End) => {
                self.ended = true;
                return Ok(false);
            }
            // Not ended: the sender is gone, so any later read fails too.
            Ok(Msg::Failed(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream was cut short (the stage before stopped)",
                ))
            }
        };
        Ok(true)
    }
}

/// Writes everything `from` gives into `out`, a buffer of it at a time: from an [`Input`],
/// whole blocks (`io::copy` would cut them into 8 KiB writes). Returns the number of bytes.
pub fn copy_buffered(from: &mut impl BufRead, out: &mut impl Write) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let available = from.fill_buf()?;
        if available.is_empty() {
            return Ok(total);
        }
        out.write_all(available)?;
        let n = available.len();
        from.consume(n);
        total += n as u64;
    }
}

/// `Read::read` of a `BufRead`: a copy out of its buffer.
pub fn read_buffered(from: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    let available = from.fill_buf()?;
    let n = available.len().min(buf.len());
    buf[..n].copy_from_slice(&available[..n]);
    from.consume(n);
    Ok(n)
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                break;
            }
        }
        Ok(&self.block[self.at..])
    }

    fn consume(&mut self, amount: usize) {
        self.at = (self.at + amount).min(self.block.len());
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pass_through_a_stage_in_order_and_its_result_comes_back() {
        let mut stage = StageWriter::spawn("test", |input| {
            let mut got = Vec::new();
            copy_buffered(input, &mut got)?;
            Ok(got)
        })
        .unwrap();
        let data: Vec<u8> = (0..3 * BLOCK + 17).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(10_000) {
            stage.write_all(chunk).unwrap();
        }
        assert_eq!(stage.finish().unwrap(), data);
    }

    /// Gives its bytes in reads of odd, varying sizes.
    struct Ragged<'a> {
        data: &'a [u8],
        turn: usize,
    }

    impl Read for Ragged<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.turn += 1;
            let n = (self.turn * 7919 % 100_003)
                .min(buf.len())
                .min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn blocks_filled_in_place_and_reused_pass_every_byte_once_in_order() {
        // Many blocks, each of different bytes, cut at odd places: a block handed back and
        // filled again must never let a byte of its earlier content through.
        let data: Vec<u8> = (0..40 * BLOCK + 12_345)
            .map(|i| (i / 1000 % 251) as u8 ^ (i % 7) as u8)
            .collect();
        std::thread::scope(|scope| {
            let mut input = spawn_reader(scope, "source", |out| {
                let n = out.fill_from(&mut Ragged {
                    data: &data,
                    turn: 0,
                })?;
                assert_eq!(n, data.len() as u64);
                // Written bytes after filled ones land behind them.
                out.write_all(b"tail")
            })
            .unwrap();
            // Read through `BufRead`, a part of each buffer at a time.
            let mut got = Vec::new();
            loop {
                let available = input.fill_buf().unwrap();
                if available.is_empty() {
                    break;
                }
                let take = available.len().min(got.len() % 50_000 + 1);
                got.extend_from_slice(&available[..take]);
                input.consume(take);
            }
            assert_eq!(got.len(), data.len() + 4);
            assert!(got[..data.len()] == data[..], "the bytes differ");
            assert_eq!(&got[data.len()..], b"tail");
        });
    }

    #[test]
    fn a_stage_that_fails_stops_the_writer_with_its_own_error() {
        let mut stage = StageWriter::spawn("failing", |input| -> io::Result<()> {
            let mut first = [0u8; 10];
            input.read_exact(&mut first)?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap();
        let block = vec![0u8; BLOCK];
        // The writer may queue a few blocks before it notices; never more than the queue.
        let err = (0..DEPTH + 3)
            .find_map(|_| stage.write_all(&block).err())
            .expect("the writer stops");
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }

    #[test]
    fn a_writer_dropped_unfinished_fails_the_stage_instead_of_ending_it() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut stage = StageWriter::spawn("next", move |input| {
            let mut got = Vec::new();
            let result = copy_buffered(input, &mut got);
            tx.send(result.map_err(|e| e.kind())).unwrap();
            Ok(())
        })
        .unwrap();
        stage.write_all(&vec![1u8; BLOCK + 1]).unwrap();
        drop(stage);
        assert_eq!(rx.recv().unwrap(), Err(io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn a_stage_that_panics_is_an_error_naming_it() {
        let stage = StageWriter::spawn("broken", |_| -> io::Result<()> { panic!("bug") }).unwrap();
        let err = stage.finish().unwrap_err();
        assert!(err.to_string().contains("broken stage panicked"), "{err}");
    }

    #[test]
    fn a_reading_stage_passes_its_bytes_and_then_its_error_down_and_never_an_end() {
        std::thread::scope(|scope| {
            let mut input = spawn_reader(scope, "source", |out| {
                out.write_all(&vec![3u8; BLOCK + 5])?;
                Err(io::Error::other("disk on fire"))
            })
            .unwrap();
            let mut got = Vec::new();
            let err = input.read_to_end(&mut got).unwrap_err();
            assert_eq!(got.len(), BLOCK, "the full block came first");
            assert!(err.to_string().contains("disk on fire"), "{err}");
            assert!(input.read(&mut [0u8; 10]).is_err(), "no clean end after it");

            let mut input = spawn_reader(scope, "source", |out| out.write_all(b"whole")).unwrap();
            let mut got = Vec::new();
            input.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"whole");
        });
    }
}
