//! The Sluice event generator as a library (the binary is a thin CLI over it).
