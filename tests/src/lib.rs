//! Test harness shared by Sluice's integration tests: a throwaway PostgreSQL cluster
//! (`pg`), a throwaway kube-apiserver + etcd + controller-manager (`kube_env`), and
//! helpers to find and run the workspace's binaries (`bins`).

pub mod bench_formats;
pub mod bench_latency;
pub mod bench_scale;
pub mod bins;
pub mod cpu;
pub mod kube_env;
pub mod local;
pub mod pg;
pub mod procs;
pub mod scenario;
pub mod sensors;
pub mod verify;
