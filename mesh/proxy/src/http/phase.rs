//! The proxy's lifecycle, as every listener and connection sees it.

/// Lifecycle phases broadcast to every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepting and serving.
    Running,
    /// Not accepting; in-flight requests finish.
    Draining,
    /// Everything stops, including the admin listener.
    Exiting,
}
