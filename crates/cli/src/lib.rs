//! The parts of the `baton` command line that other programs and tests can use on their own.

pub mod workflow_file;
