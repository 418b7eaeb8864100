//! SCRAM credential requests: AlterUserScramCredentials, DescribeUserScramCredentials.

use std::ffi::c_char;
use std::ptr;

use rdkafka::bindings as rd;

use super::{Alterations, NativeAdmin, ScramCredential, ScramMechanism, c_str, cstring};
use crate::admin::error::AdminError;

impl NativeAdmin {
    pub(super) fn alter_scram_blocking(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        password: Option<&str>,
        iterations: i32,
    ) -> Result<(), AdminError> {
        let what = if password.is_some() { "upsert a SCRAM credential" } else { "delete a SCRAM credential" };
        let name = cstring(user)?;
        // SAFETY: a NUL-terminated user name and a password slice that live across the call; no
        // salt (librdkafka makes a random one). The alteration is destroyed by its guard.
        let alteration = unsafe {
            match password {
                Some(p) => rd::rd_kafka_UserScramCredentialUpsertion_new(
                    name.as_ptr(),
                    mechanism.native(),
                    iterations,
                    p.as_ptr(),
                    p.len(),
                    ptr::null(),
                    0,
                ),
                None => rd::rd_kafka_UserScramCredentialDeletion_new(name.as_ptr(), mechanism.native()),
            }
        };
        let mut alterations = Alterations(vec![alteration]);
        if alteration.is_null() {
            return Err(AdminError::Invalid(format!("a SCRAM credential for {user}")));
        }
        let event = self.request(
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
            what,
            rd::RD_KAFKA_EVENT_ALTERUSERSCRAMCREDENTIALS_RESULT,
            // SAFETY: live handle, options, queue and alteration.
            |rk, opts, q| unsafe {
                rd::rd_kafka_AlterUserScramCredentials(rk, alterations.0.as_mut_ptr(), 1, opts, q)
            },
        )?;
        let mut count = 0;
        // SAFETY: a live AlterUserScramCredentials event; the array belongs to it.
        let responses = unsafe {
            rd::rd_kafka_AlterUserScramCredentials_result_responses(
                rd::rd_kafka_event_AlterUserScramCredentials_result(event.0),
                &mut count,
            )
        };
        for i in 0..count {
            // SAFETY: `i < count` responses owned by the live event.
            let error =
                unsafe { rd::rd_kafka_AlterUserScramCredentials_result_response_error(*responses.add(i)) };
            if let Some((code, message)) = self.item_error(error) {
                return Err(AdminError::from_code(
                    &self.principal,
                    &format!("{what} of {user}"),
                    &code,
                    &message,
                    false,
                ));
            }
        }
        Ok(())
    }

    pub(super) fn describe_scram_blocking(
        &self,
        users: &[String],
    ) -> Result<Vec<(String, Vec<ScramCredential>)>, AdminError> {
        let names = users.iter().map(|u| cstring(u)).collect::<Result<Vec<_>, _>>()?;
        let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let event = self.request(
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEUSERSCRAMCREDENTIALS,
            "describe SCRAM credentials",
            rd::RD_KAFKA_EVENT_DESCRIBEUSERSCRAMCREDENTIALS_RESULT,
            // SAFETY: live handle, options and queue; the names live until `names` drops.
            |rk, opts, q| unsafe {
                rd::rd_kafka_DescribeUserScramCredentials(rk, pointers.as_mut_ptr(), pointers.len(), opts, q)
            },
        )?;
        let mut count = 0;
        // SAFETY: a live DescribeUserScramCredentials event; the array belongs to it.
        let descriptions = unsafe {
            rd::rd_kafka_DescribeUserScramCredentials_result_descriptions(
                rd::rd_kafka_event_DescribeUserScramCredentials_result(event.0),
                &mut count,
            )
        };
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: `i < count` descriptions owned by the live event, and what they hold.
            unsafe {
                let d = *descriptions.add(i);
                let user = c_str(rd::rd_kafka_UserScramCredentialsDescription_user(d));
                if let Some((code, message)) =
                    self.item_error(rd::rd_kafka_UserScramCredentialsDescription_error(d))
                {
                    if code == "RESOURCE_NOT_FOUND" {
                        out.push((user, Vec::new()));
                        continue;
                    }
                    return Err(AdminError::from_code(
                        &self.principal,
                        "describe SCRAM credentials",
                        &code,
                        &message,
                        false,
                    ));
                }
                let n = rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo_count(d);
                let credentials = (0..n)
                    .filter_map(|j| {
                        let info = rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo(d, j);
                        let mechanism = match rd::rd_kafka_ScramCredentialInfo_mechanism(info) {
                            rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256 => {
                                ScramMechanism::Sha256
                            }
                            rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512 => {
                                ScramMechanism::Sha512
                            }
                            _ => return None,
                        };
                        Some(ScramCredential {
                            mechanism,
                            iterations: rd::rd_kafka_ScramCredentialInfo_iterations(info),
                        })
                    })
                    .collect();
                out.push((user, credentials));
            }
        }
        Ok(out)
    }
}
