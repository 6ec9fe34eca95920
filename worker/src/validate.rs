//! CSV parsing and row validation against the core schema.
