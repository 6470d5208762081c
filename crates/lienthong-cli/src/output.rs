//! Printing that never panics. `println!` and `eprintln!` panic when the write fails (a closed
//! pipe, a full disk): that would take a serving process down, and turn `lienthong ... | head`
//! into a panic message. The clippy lints `print_stdout` and `print_stderr` keep them out of this
//! crate; these macros take their place.

use std::fmt;
use std::io::{self, Write};

/// A one-shot command's result on stdout, as `println!`. Without a reader the process ends: see
/// [`stdout`].
macro_rules! outln {
    () => {
        $crate::output::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`outln!`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*))
    };
}

/// A line on stdout from a process that serves (where it listens, a demo's summary): if it
/// cannot be written it is lost, and the process goes on serving.
macro_rules! noteln {
    ($($arg:tt)*) => {
        $crate::output::note(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// A line on stderr, as `eprintln!`; a failed write is ignored.
macro_rules! errln {
    () => {
        $crate::output::stderr(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`errln!`] without the newline.
macro_rules! errprint {
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*))
    };
}

/// Writes to stdout. If stdout refuses, the rest of the result has no reader, so the process
/// ends: quietly and successfully for a closed pipe (`lienthong ... | head`, as `audit query`
/// does), with an error otherwise (a full disk).
pub(crate) fn stdout(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        stderr(format_args!("error: writing to stdout: {e}\n"));
        std::process::exit(1);
    }
}

/// Writes to stdout, ignoring a failure.
pub(crate) fn note(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.flush());
}

/// Writes to stderr, ignoring a failure.
pub(crate) fn stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}
