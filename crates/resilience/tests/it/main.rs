//! Integration tests of `holdfast-resilience`.
