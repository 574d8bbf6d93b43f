//! The messages instances, entities and nodes send each other (through the store's queues
//! today; a cluster transport adds its message types to this list).
#![no_main]

use libfuzzer_sys::fuzz_target;
use perdure_core::management::StartRequest;
use perdure_fuzz::decoders;
use perdure_node::state::records::{
    ActivityTask, EntityCaller, EntityOperationMsg, InboxMessage, LockRequestMsg, MessageBody,
    Target,
};

fuzz_target!(|data: &[u8]| {
    decoders!(data;
        InboxMessage,
        MessageBody,
        EntityOperationMsg,
        LockRequestMsg,
        EntityCaller,
        Target,
        ActivityTask,
        StartRequest,
    );
});
