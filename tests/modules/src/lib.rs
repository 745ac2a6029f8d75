//! See tests/modules.rs.
