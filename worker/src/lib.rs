//! Sluice worker library.
