//! Integration tests of the fault-injecting proxy: a real echo server and a real HTTP
//! server behind it on 127.0.0.1, real clients in front, and the faults observed as a
//! client of the dependency would observe them.

mod api;
mod http;
mod support;
mod tcp;
