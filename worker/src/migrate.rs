//! Schema migrations (refinery) applied under an advisory lock.
