//! The ADS server over real gRPC on 127.0.0.1, driven by scripted clients and a fake generator.

mod debug;
mod delta;
mod harness;
mod lifecycle;
mod sotw;
