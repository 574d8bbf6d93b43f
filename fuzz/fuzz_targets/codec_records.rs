//! Every record the state layer reads back from the store, through the codec (a store is
//! outside input: a corrupt or hostile disk must give a typed error, never a panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use perdure_core::management::InstanceState;
use perdure_core::{EntityId, ExecutionId, FailureDetails, HistoryEvent, InstanceId, Payload};
use perdure_fuzz::decoders;
use perdure_node::state::records::{EntityLock, EntityRecord, InstanceRecord, LeaseRecord};

fuzz_target!(|data: &[u8]| {
    decoders!(data;
        HistoryEvent,
        Vec<HistoryEvent>,
        InstanceRecord,
        EntityRecord,
        EntityLock,
        LeaseRecord,
        InstanceState,
        FailureDetails,
        Payload,
        InstanceId,
        ExecutionId,
        EntityId,
    );
});
