//! Pins the type ids and field layout of the generated code to the upstream
//! Cap'n Proto schemas, so an accidental rename or renumbering in our schema
//! copies fails loudly.

use capnp::message::{Builder, HeapAllocator, ReaderOptions};
use capnp::traits::HasTypeId;
use capnp_actix_schemas::{
    bench_capnp, calculator_capnp, echo_api_capnp, persistent_capnp, rpc_capnp, rpc_twoparty_capnp,
};

fn id<T: HasTypeId>() -> u64 {
    T::TYPE_ID
}

#[test]
fn rpc_type_ids_match_upstream() {
    use rpc_capnp::*;
    let expected: &[(&str, u64, u64)] = &[
        (
            "Message",
            id::<message::Reader<'_>>(),
            0x91b7_9f1f_808d_b032,
        ),
        (
            "Bootstrap",
            id::<bootstrap::Reader<'_>>(),
            0xe94c_cf80_3117_6ec4,
        ),
        ("Call", id::<call::Reader<'_>>(), 0x836a_53ce_789d_4cd4),
        (
            "Call.sendResultsTo",
            id::<call::send_results_to::Reader<'_>>(),
            0xdae8_b0f6_1aab_5f99,
        ),
        ("Return", id::<return_::Reader<'_>>(), 0x9e19_b28d_3db3_573a),
        ("Finish", id::<finish::Reader<'_>>(), 0xd37d_2eb2_c2f8_0e63),
        (
            "Resolve",
            id::<resolve::Reader<'_>>(),
            0xbbc2_9655_fa89_086e,
        ),
        (
            "Release",
            id::<release::Reader<'_>>(),
            0xad1a_6c0d_7dd0_7497,
        ),
        (
            "Disembargo",
            id::<disembargo::Reader<'_>>(),
            0xf964_368b_0fbd_3711,
        ),
        (
            "Disembargo.context",
            id::<disembargo::context::Reader<'_>>(),
            0xd562_b4df_655b_dd4d,
        ),
        (
            "Provide",
            id::<provide::Reader<'_>>(),
            0x9c6a_046b_fbc1_ac5a,
        ),
        ("Accept", id::<accept::Reader<'_>>(), 0xd4c9_b562_9055_4016),
        ("Join", id::<join::Reader<'_>>(), 0xfbe1_9804_90e0_01af),
        (
            "MessageTarget",
            id::<message_target::Reader<'_>>(),
            0x95bc_1454_5813_fbc1,
        ),
        (
            "Payload",
            id::<payload::Reader<'_>>(),
            0x9a0e_6122_3d96_743b,
        ),
        (
            "CapDescriptor",
            id::<cap_descriptor::Reader<'_>>(),
            0x8523_ddc4_0b86_b8b0,
        ),
        (
            "PromisedAnswer",
            id::<promised_answer::Reader<'_>>(),
            0xd800_b1d6_cd6f_1ca0,
        ),
        (
            "PromisedAnswer.Op",
            id::<promised_answer::op::Reader<'_>>(),
            0xf316_9444_1556_9081,
        ),
        (
            "ThirdPartyCapDescriptor",
            id::<third_party_cap_descriptor::Reader<'_>>(),
            0xd370_07fd_e1f0_027d,
        ),
        (
            "Exception",
            id::<exception::Reader<'_>>(),
            0xd625_b706_3acf_691a,
        ),
        (
            "Exception.Type",
            id::<exception::Type>(),
            0xb28c_96e2_3f4c_bd58,
        ),
    ];
    for &(name, got, want) in expected {
        assert_eq!(got, want, "type id of rpc.capnp:{name}");
    }
    // Builders report the same id as readers.
    assert_eq!(id::<message::Builder<'_>>(), 0x91b7_9f1f_808d_b032);
}

#[test]
fn rpc_twoparty_type_ids_match_upstream() {
    use rpc_twoparty_capnp::*;
    assert_eq!(id::<Side>(), 0x9fd6_9ebc_87b9_719c);
    assert_eq!(id::<vat_id::Reader<'_>>(), 0xd20b_909f_ee73_3a8e);
    assert_eq!(id::<provision_id::Reader<'_>>(), 0xb88d_09a9_c5f3_9817);
    assert_eq!(id::<recipient_id::Reader<'_>>(), 0x89f3_89b6_fd40_82c1);
    assert_eq!(
        id::<third_party_cap_id::Reader<'_>>(),
        0xb47f_4979_672c_b59d
    );
    assert_eq!(id::<join_key_part::Reader<'_>>(), 0x95b2_9059_097f_ca83);
    assert_eq!(id::<join_result::Reader<'_>>(), 0x9d26_3a36_30b7_ebee);
}

#[test]
fn persistent_ids_match_upstream() {
    use capnp::any_pointer::Owned as Any;
    use persistent_capnp::*;
    assert_eq!(id::<persistent::Client<Any, Any>>(), 0xc8cb_212f_cd9f_5691);
    assert_eq!(
        id::<persistent::save_params::Reader<'_, Any, Any>>(),
        0xf76f_ba59_1830_73a5
    );
    assert_eq!(
        id::<persistent::save_results::Reader<'_, Any, Any>>(),
        0xb768_48c1_8c40_efbf
    );
    // Renamed from upstream `persistent`, id kept.
    assert_eq!(persistent_annotation::ID, 0xf622_5950_91ca_fb67);
}

#[test]
fn tutorial_ids() {
    assert_eq!(id::<echo_api_capnp::echo::Client>(), 0xe5ef_244d_0ac3_b596);
    assert_eq!(
        id::<echo_api_capnp::callback::Client>(),
        0xed55_fa6d_e249_d282
    );
    assert_eq!(
        id::<echo_api_capnp::saved_logger::Reader<'_>>(),
        0xa895_2c3f_ab9f_b269
    );
    assert_eq!(
        id::<echo_api_capnp::saved_service::Reader<'_>>(),
        0xae92_da3a_18bd_0b37
    );
    assert_eq!(id::<bench_capnp::bench::Client>(), 0x810c_5265_5fcb_8e70);

    // The calculator sample's ids, as used by every other implementation.
    use calculator_capnp::calculator;
    assert_eq!(id::<calculator::Client>(), 0x9798_3392_df35_cc36);
    assert_eq!(
        id::<calculator::expression::Reader<'_>>(),
        0xd438_d7ca_f554_8d15
    );
    assert_eq!(id::<calculator::value::Client>(), 0xc3e6_9d34_d3ee_48d2);
    assert_eq!(id::<calculator::function::Client>(), 0xede8_3a3d_9684_0394);
    assert_eq!(id::<calculator::Operator>(), 0x8793_4078_61e6_dfe6);
}

/// Data section (as bytes) of the root struct of a single-segment message.
fn root_data(message: &Builder<HeapAllocator>) -> Vec<u8> {
    let segments = message.get_segments_for_output();
    assert_eq!(segments.len(), 1);
    let seg = segments[0];
    // Word 0 is the root struct pointer; the struct starts right after it.
    let pointer = u64::from_le_bytes(seg[0..8].try_into().unwrap());
    assert_eq!(pointer & 3, 0, "root is a struct pointer");
    assert_eq!(pointer >> 2 & 0x3fff_ffff, 0, "struct follows the pointer");
    let data_words = (pointer >> 32 & 0xffff) as usize;
    seg[8..8 + 8 * data_words].to_vec()
}

fn bit(data: &[u8], n: usize) -> bool {
    data[n / 8] >> (n % 8) & 1 == 1
}

#[test]
fn call_pipelining_flags() {
    let mut message = Builder::new_default();
    let mut call = message.init_root::<rpc_capnp::call::Builder<'_>>();
    assert!(!call.reborrow_as_reader().get_no_promise_pipelining());
    assert!(!call.reborrow_as_reader().get_only_promise_pipeline());
    call.set_no_promise_pipelining(true);
    call.set_only_promise_pipeline(true);
    let data = root_data(&message);
    assert_eq!(data.len(), 24, "Call has 3 data words");
    // Upstream layout: allowThirdPartyTailCall @8 bit 128,
    // noPromisePipelining @9 bit 129, onlyPromisePipeline @10 bit 130.
    assert!(!bit(&data, 128));
    assert!(bit(&data, 129));
    assert!(bit(&data, 130));
}

#[test]
fn return_no_finish_needed() {
    let mut message = Builder::new_default();
    let mut ret = message.init_root::<rpc_capnp::return_::Builder<'_>>();
    assert!(
        ret.reborrow_as_reader().get_release_param_caps(),
        "default true"
    );
    assert!(!ret.reborrow_as_reader().get_no_finish_needed());
    ret.set_no_finish_needed(true);
    let data = root_data(&message);
    // releaseParamCaps @1 is bit 32 (stored XOR its default true),
    // noFinishNeeded @8 is bit 33.
    assert!(!bit(&data, 32));
    assert!(bit(&data, 33));
}

#[test]
fn finish_early_cancellation_workaround() {
    let mut message = Builder::new_default();
    let mut finish = message.init_root::<rpc_capnp::finish::Builder<'_>>();
    assert!(
        finish
            .reborrow_as_reader()
            .get_require_early_cancellation_workaround(),
        "default true"
    );
    finish.set_require_early_cancellation_workaround(false);
    let data = root_data(&message);
    // Bit 33, stored XOR its default true.
    assert!(bit(&data, 33));

    // An old peer's Finish (no such field) reads back as the default, true.
    let mut old = Builder::new_default();
    old.init_root::<rpc_capnp::finish::Builder<'_>>()
        .set_question_id(7);
    let words = capnp::serialize::write_message_to_words(&old);
    let reader =
        capnp::serialize::read_message(&mut words.as_slice(), ReaderOptions::new()).unwrap();
    let finish: rpc_capnp::finish::Reader<'_> = reader.get_root().unwrap();
    assert_eq!(finish.get_question_id(), 7);
    assert!(finish.get_require_early_cancellation_workaround());
    assert!(finish.get_release_result_caps());
}

#[test]
fn message_union_discriminants() {
    // Union tags follow ordinals: bootstrap @8 has tag 8, disembargo @13 has 13.
    let mut message = Builder::new_default();
    message
        .init_root::<rpc_capnp::message::Builder<'_>>()
        .init_bootstrap();
    assert_eq!(
        u16::from_le_bytes(root_data(&message)[0..2].try_into().unwrap()),
        8
    );
    let mut message = Builder::new_default();
    message
        .init_root::<rpc_capnp::message::Builder<'_>>()
        .init_disembargo();
    assert_eq!(
        u16::from_le_bytes(root_data(&message)[0..2].try_into().unwrap()),
        13
    );
}
