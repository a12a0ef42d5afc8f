//! DescribeUserScramCredentials (50) and AlterUserScramCredentials (51): Kafka's admin
//! API of the SCRAM users (`kafka-configs --alter --add-config 'SCRAM-SHA-512=[...]'`,
//! AdminClient `alter_user_scram_credentials`). An upsertion carries the salt and the
//! salted password the client computed; the broker keeps salt, StoredKey, ServerKey and
//! iterations. Only the principals in `gateway.super_users` may call them (until ACLs
//! exist): others get CLUSTER_AUTHORIZATION_FAILED.

use super::scram::{ScramCredential, ScramHash, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN};
use super::users::valid_user_name;
use crate::gateway::requests::Context;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, BTreeSet};

fn authorized(context: &Context) -> bool {
    context
        .gateway
        .config
        .super_users
        .contains(&context.principal)
}

fn unauthorized_message(context: &Context) -> String {
    format!(
        "{} is not in gateway.super_users: SCRAM credentials cannot be described or altered",
        context.principal
    )
}

pub fn describe(
    context: &Context,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let mut response = DescribeUserScramCredentialsResponse::default();
    if !authorized(context) {
        response.error_code = ResponseError::ClusterAuthorizationFailed.code();
        response.error_message = Some(StrBytes::from_string(unauthorized_message(context)));
        return response;
    }
    let users = &context.gateway.users;
    let result = |user: &str, mechanisms: Vec<(ScramHash, u32)>| {
        let mut result = DescribeUserScramCredentialsResult::default();
        result.user = StrBytes::from_string(user.to_string());
        result.credential_infos = mechanisms
            .into_iter()
            .map(|(hash, iterations)| {
                let mut info = CredentialInfo::default();
                info.mechanism = hash.kafka_code();
                info.iterations = iterations as i32;
                info
            })
            .collect();
        result
    };
    let named: Vec<String> = request
        .users
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.name.as_str().to_string())
        .collect();
    if named.is_empty() {
        response.results = users
            .list()
            .into_iter()
            .map(|(user, mechanisms)| result(&user, mechanisms))
            .collect();
        return response;
    }
    let mut seen = BTreeMap::new();
    for name in &named {
        *seen.entry(name.as_str()).or_insert(0) += 1;
    }
    let mut reported = BTreeSet::new();
    for name in &named {
        if !reported.insert(name.as_str()) {
            continue;
        }
        let mechanisms = users.describe(name);
        let mut entry = result(name, Vec::new());
        if seen[name.as_str()] > 1 {
            entry.error_code = ResponseError::DuplicateResource.code();
            entry.error_message = Some(StrBytes::from_static_str(
                "Cannot describe SCRAM credentials for the same user twice in a single request",
            ));
        } else if mechanisms.is_empty() {
            entry.error_code = ResponseError::ResourceNotFound.code();
            entry.error_message = Some(StrBytes::from_static_str(
                "Attempt to describe a user credential that does not exist",
            ));
        } else {
            entry = result(name, mechanisms);
        }
        response.results.push(entry);
    }
    response
}

/// One change asked for, checked.
enum Change {
    Upsert(ScramHash, ScramCredential),
    Delete(ScramHash),
}

pub fn alter(
    context: &Context,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut response = AlterUserScramCredentialsResponse::default();
    // Per user, in the order first named: its changes, or the first reason to refuse.
    let mut order: Vec<String> = Vec::new();
    let mut changes: BTreeMap<String, Result<Vec<Change>, (ResponseError, String)>> =
        BTreeMap::new();
    let mut touched: BTreeSet<(String, i8)> = BTreeSet::new();
    let ops = request
        .deletions
        .into_iter()
        .map(|d| (d.name.as_str().to_string(), d.mechanism, None))
        .chain(request.upsertions.into_iter().map(|u| {
            let name = u.name.as_str().to_string();
            (
                name,
                u.mechanism,
                Some((u.iterations, u.salt, u.salted_password)),
            )
        }));
    for (user, code, upsert) in ops {
        if !changes.contains_key(&user) {
            order.push(user.clone());
        }
        let entry = changes
            .entry(user.clone())
            .or_insert_with(|| Ok(Vec::new()));
        let Ok(list) = entry else { continue };
        let refuse = |error: ResponseError, message: &str| Err((error, message.to_string()));
        let checked = if !touched.insert((user.clone(), code)) {
            refuse(
                ResponseError::DuplicateResource,
                "A user credential cannot be altered twice in the same request",
            )
        } else if !valid_user_name(&user) {
            refuse(
                ResponseError::UnacceptableCredential,
                "the user name is empty, too long or has control characters",
            )
        } else {
            match (ScramHash::from_kafka_code(code), upsert) {
                (None, _) => refuse(
                    ResponseError::UnsupportedSaslMechanism,
                    "Unknown SCRAM mechanism",
                ),
                (Some(hash), None) => Ok(Change::Delete(hash)),
                (Some(hash), Some((iterations, salt, salted_password))) => {
                    if iterations < SCRAM_ITERATIONS_MIN as i32 {
                        refuse(ResponseError::UnacceptableCredential, "Too few iterations")
                    } else if iterations > SCRAM_ITERATIONS_MAX as i32 {
                        refuse(ResponseError::UnacceptableCredential, "Too many iterations")
                    } else if salt.is_empty() || salted_password.len() != hash.output_bytes() {
                        refuse(
                            ResponseError::UnacceptableCredential,
                            "the salt is empty or the salted password is not the mechanism's hash size",
                        )
                    } else {
                        let credential = ScramCredential::from_salted_password(
                            hash,
                            salt.to_vec(),
                            &salted_password,
                            iterations as u32,
                        );
                        Ok(Change::Upsert(hash, credential))
                    }
                }
            }
        };
        match checked {
            Ok(change) => list.push(change),
            Err(refused) => *entry = Err(refused),
        }
    }
    let allowed = authorized(context);
    let users = &context.gateway.users;
    for user in order {
        let mut result = AlterUserScramCredentialsResult::default();
        result.user = StrBytes::from_string(user.clone());
        let outcome = if !allowed {
            Err((
                ResponseError::ClusterAuthorizationFailed,
                unauthorized_message(context),
            ))
        } else {
            match changes.remove(&user).expect("every user named has changes") {
                Err(refused) => Err(refused),
                Ok(list) => apply(users, &user, list),
            }
        };
        if let Err((error, message)) = outcome {
            result.error_code = error.code();
            result.error_message = Some(StrBytes::from_string(message));
        } else {
            eprintln!(
                "precursor-controlplane: kafka gateway: {} altered the SCRAM credentials of \
                 user {user:?}",
                context.principal
            );
        }
        response.results.push(result);
    }
    response
}

fn apply(
    users: &super::users::UserStore,
    user: &str,
    changes: Vec<Change>,
) -> Result<(), (ResponseError, String)> {
    // Deletions of credentials that do not exist are refused before anything is done.
    let existing = users.describe(user);
    for change in &changes {
        if let Change::Delete(hash) = change {
            if !existing.iter().any(|(h, _)| h == hash) {
                return Err((
                    ResponseError::ResourceNotFound,
                    "Attempt to delete a user credential that does not exist".into(),
                ));
            }
        }
    }
    let stored =
        |e: super::users::UserStoreError| (ResponseError::UnknownServerError, e.to_string());
    for change in changes {
        match change {
            Change::Upsert(hash, credential) => {
                users.upsert(user, hash, credential).map_err(stored)?
            }
            Change::Delete(hash) => {
                users.delete(user, Some(hash)).map_err(stored)?;
            }
        }
    }
    Ok(())
}
