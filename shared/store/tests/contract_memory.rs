//! The adapter contract suite against the in-memory adapter.

mod contract;

contract_suite!(async { corebank_store::memory::stores().0 });
