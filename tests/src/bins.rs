//! Locating and running the workspace binaries (sluice-generator, sluice-worker, ...).
