//! Unit tests of the walk that need the test-only hooks (races at exact moments).
