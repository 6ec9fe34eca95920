//! Shared pieces of Sluice: the event schema both the generator and the worker speak,
//! the configuration types shared by the operator and the pods, and telemetry
//! (Prometheus registry, the `/metrics` + health HTTP server, logging setup).

pub mod config;
pub mod event;
pub mod landing;
pub mod metric_names;
pub mod reject;
pub mod schema;
pub mod telemetry;
pub mod values;

pub use event::{Event, EventType, HEADER, HEADER_FIELDS};
pub use reject::RejectReason;
