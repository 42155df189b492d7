//! Shared support for the whole-stack integration tests.
