//! Every reason the operator writes: in the conditions it sets and in the Events it
//! records. Typed, so that nothing compares reasons as text; [`Reason::as_str`] gives the
//! CamelCase string Kubernetes shows (`kubectl describe`, `kubectl wait`, the docs).

use std::fmt;

use sluice_core::metric_names::DegradedCause;

/// A condition or Event reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    // Ready.
    /// Every worker (and the generator, when enabled) is ready.
    AllReady,
    WorkersNotReady,
    GeneratorNotReady,
    /// Ready is False and Suspended is True; also the Event on suspension.
    Suspended,
    /// Ready, set by the finalizer; also the Warning Event.
    DeletedWithBacklog,

    // Progressing.
    RollingOut,
    RolledOut,

    // Degraded (also Ready and, for InvalidSpec, Progressing).
    /// No problem found.
    AsExpected,
    /// The spec fails validation or the image policy.
    InvalidSpec,
    SecretNotFound,
    SecretIncomplete,
    PostgresClusterNotFound,
    /// Applying a child failed.
    ApplyFailed,
    /// A cause the workers report through `sluice_worker_degraded`.
    Worker(DegradedCause),

    // Suspended.
    /// spec.suspend is false.
    Running,

    // Monitoring.
    PodMonitorCRDMissing,
    PodMonitorApplied,

    // Events only.
    /// Degraded went back to False.
    Recovered,
    /// spec.suspend went back to false.
    Resumed,
    /// Ready became True.
    Ready,
    /// Ready became False.
    NotReady,
    /// spec.checkpoints changed while the workers' claim templates cannot.
    CheckpointSettingsFixed,
}

impl Reason {
    /// Every reason without a payload (the worker-reported ones are
    /// `DegradedCause::ALL` wrapped in [`Reason::Worker`]).
    pub const PLAIN: [Reason; 21] = [
        Reason::AllReady,
        Reason::WorkersNotReady,
        Reason::GeneratorNotReady,
        Reason::Suspended,
        Reason::DeletedWithBacklog,
        Reason::RollingOut,
        Reason::RolledOut,
        Reason::AsExpected,
        Reason::InvalidSpec,
        Reason::SecretNotFound,
        Reason::SecretIncomplete,
        Reason::PostgresClusterNotFound,
        Reason::ApplyFailed,
        Reason::Running,
        Reason::PodMonitorCRDMissing,
        Reason::PodMonitorApplied,
        Reason::Recovered,
        Reason::Resumed,
        Reason::Ready,
        Reason::NotReady,
        Reason::CheckpointSettingsFixed,
    ];

    /// Every reason, the worker-reported ones included.
    pub fn all() -> impl Iterator<Item = Reason> {
        Reason::PLAIN
            .into_iter()
            .chain(DegradedCause::ALL.into_iter().map(Reason::Worker))
    }

    /// The reason as Kubernetes shows it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::AllReady => "AllReady",
            Reason::WorkersNotReady => "WorkersNotReady",
            Reason::GeneratorNotReady => "GeneratorNotReady",
            Reason::Suspended => "Suspended",
            Reason::DeletedWithBacklog => "DeletedWithBacklog",
            Reason::RollingOut => "RollingOut",
            Reason::RolledOut => "RolledOut",
            Reason::AsExpected => "AsExpected",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretIncomplete => "SecretIncomplete",
            Reason::PostgresClusterNotFound => "PostgresClusterNotFound",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::Worker(cause) => cause.condition_reason(),
            Reason::Running => "Running",
            Reason::PodMonitorCRDMissing => "PodMonitorCRDMissing",
            Reason::PodMonitorApplied => "PodMonitorApplied",
            Reason::Recovered => "Recovered",
            Reason::Resumed => "Resumed",
            Reason::Ready => "Ready",
            Reason::NotReady => "NotReady",
            Reason::CheckpointSettingsFixed => "CheckpointSettingsFixed",
        }
    }

    /// The reason a condition shows, if it is one of the operator's.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::all().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        r.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strings_are_the_ones_documented() {
        let strings: Vec<&str> = Reason::all().map(Reason::as_str).collect();
        assert_eq!(
            strings,
            [
                "AllReady",
                "WorkersNotReady",
                "GeneratorNotReady",
                "Suspended",
                "DeletedWithBacklog",
                "RollingOut",
                "RolledOut",
                "AsExpected",
                "InvalidSpec",
                "SecretNotFound",
                "SecretIncomplete",
                "PostgresClusterNotFound",
                "ApplyFailed",
                "Running",
                "PodMonitorCRDMissing",
                "PodMonitorApplied",
                "Recovered",
                "Resumed",
                "Ready",
                "NotReady",
                "CheckpointSettingsFixed",
                "WorkerLockTimeout",
                "WorkerStatementTimeout",
                "DatabaseDiskFull",
                "DatabaseOutOfMemory",
                "DatabasePermissionDenied",
                "TableMissing",
                "TableChanged",
                "DatabaseError",
                "CheckpointUnwritable",
                "AfterCommitFailing",
                "RestoredBehindCheckpoint",
                "SchemaMismatch",
            ]
        );
    }

    #[test]
    fn every_reason_is_distinct_and_parses_back() {
        let all: Vec<Reason> = Reason::all().collect();
        for r in &all {
            assert_eq!(Reason::parse(r.as_str()), Some(*r), "{r}");
            assert_eq!(all.iter().filter(|o| o.as_str() == r.as_str()).count(), 1);
        }
        assert_eq!(Reason::parse("NoSuchReason"), None);
        assert_eq!(Reason::InvalidSpec.to_string(), "InvalidSpec");
    }
}
