//! The Sluice operator as a library: the IngestPipeline API and its reconciler.
