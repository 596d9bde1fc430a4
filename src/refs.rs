//! Reading the references of the files (`{ secret = … }`, `{ ssm = … }`): which
//! calls to make, and whether each answer is the value that was asked for.
//!
//! Every reference is read once however many variables use it; Secrets
//! Manager's current versions go 20 to a `BatchGetSecretValue`, pinned ones one
//! to a `GetSecretValue`, parameters 10 to a `GetParameters`; at most
//! [`CONCURRENCY`] calls per service and region are in flight, all under the
//! run's one deadline and concurrent with the KMS work (`resolve`).
//!
//! An answer is matched to its request by the full ARN (secrets, and
//! parameters asked for by ARN) or the full name plus selector (parameters),
//! never by its position in the batch or by a suffix: a peer that matched by
//! suffix once put a secret into the wrong variable. Anything short of a
//! complete, exact answer fails the whole run (exit 125) naming the file, the
//! variable, the reference and the AWS code: an `Errors` entry, an invalid
//! parameter, an item left out, an answer for another ARN, account or region, a
//! type that is not the one asked for, a JSON secret without the key, a value
//! over [`MAX_VALUE_BYTES`] or with a NUL byte for the environment. There is no
//! cache and no "warn and continue".
//!
//! The AWS calls are behind [`RefService`] (`secrets_manager`, `ssm`); the unit
//! tests run the planning and matching on answers made in memory.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use futures_util::StreamExt;
use futures_util::future::join_all;
use zeroize::Zeroizing;

use crate::aws::{AwsError, Service};
use crate::document::{Document, Entry, Value, value_rule};
use crate::error::{Error, Result};
use crate::reference::{Arn, ParamRef, ParamType, Reference, SecretRef, SecretVersion, Selector};
use crate::resolve::Selection;
use crate::secret::Secret;
use crate::terminal::escape;

/// The most ids one `BatchGetSecretValue` takes (the API's limit).
pub const SECRETS_PER_CALL: usize = 20;
/// The most names one `GetParameters` takes (the API's limit).
pub const PARAMS_PER_CALL: usize = 10;
/// Calls in flight per service and region: enough to overlap round trips,
/// few enough not to be throttled (chamber's users were, at start-up).
pub const CONCURRENCY: usize = 4;
/// The largest value kmsenv takes from a reference: Secrets Manager's own limit
/// (64 KiB); an advanced parameter holds at most 8 KiB.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// One secret as Secrets Manager answered it.
#[derive(Debug)]
pub struct SecretAnswer {
    pub arn: Option<String>,
    pub version_id: Option<String>,
    pub stages: Vec<String>,
    pub value: SecretData,
}

/// `SecretString` or `SecretBinary`.
#[derive(Debug)]
pub enum SecretData {
    Text(Secret),
    Binary(Secret),
    Neither,
}

/// An entry of `BatchGetSecretValue`'s `Errors`.
#[derive(Debug, Clone)]
pub struct BatchError {
    pub secret_id: Option<String>,
    pub error: AwsError,
}

/// A whole `BatchGetSecretValue` answer (every page).
#[derive(Debug, Default)]
pub struct SecretBatch {
    pub values: Vec<SecretAnswer>,
    pub errors: Vec<BatchError>,
}

/// One parameter as Parameter Store answered it.
#[derive(Debug)]
pub struct ParamAnswer {
    pub name: Option<String>,
    pub arn: Option<String>,
    /// `String`, `SecureString` or `StringList`.
    pub kind: Option<String>,
    pub version: i64,
    /// `:3` or `:label`, as real Parameter Store sends it (moto leaves it out).
    pub selector: Option<String>,
    pub value: Option<Secret>,
}

/// A whole `GetParameters` answer.
#[derive(Debug, Default)]
pub struct ParamBatch {
    pub params: Vec<ParamAnswer>,
    pub invalid: Vec<String>,
}

/// The calls references need. The AWS implementation is on `AwsKms` (the run's
/// one AWS service object); unit tests use an in-memory one.
pub trait RefService {
    /// `BatchGetSecretValue` of the current versions of `arns` (≤ 20) in `region`.
    fn batch_get_secrets(
        &self,
        region: &str,
        arns: &[&str],
    ) -> impl Future<Output = std::result::Result<SecretBatch, AwsError>>;
    /// `GetSecretValue` of one pinned stage or version id.
    fn get_secret(
        &self,
        region: &str,
        arn: &str,
        version: &SecretVersion,
    ) -> impl Future<Output = std::result::Result<SecretAnswer, AwsError>>;
    /// `GetParameters` with decryption of `names` (≤ 10, with selectors) in `region`.
    fn get_parameters(
        &self,
        region: &str,
        names: &[String],
    ) -> impl Future<Output = std::result::Result<ParamBatch, AwsError>>;
    /// The region of a parameter given by name: the user's (as for KMS), else
    /// the files' first key ARN region.
    fn parameter_region(&self) -> Option<String>;
}

/// The values read for the references of every file: by file (index in the
/// `docs` given) and variable name.
pub type RefValues = HashMap<(usize, String), Secret>;

/// Whether any selected entry of `docs` is a reference.
pub fn any(docs: &[Document], sel: Selection<'_>) -> bool {
    docs.iter()
        .flat_map(|d| &d.entries)
        .any(|e| matches!(e.value, Value::Ref(_)) && sel.wants(&e.name))
}

/// One variable that uses a reference.
#[derive(Clone, Copy)]
struct Use<'a> {
    doc: usize,
    file: &'a Document,
    entry: &'a Entry,
}

impl Use<'_> {
    fn place(&self) -> String {
        format!(
            "{}:{}: {}",
            self.file.path.display(),
            self.entry.at,
            self.entry.name
        )
    }
}

/// What one read is keyed by: a secret and version, or a parameter and selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Secret(String, SecretVersion),
    Param(String, Option<Selector>),
}

/// Read every selected reference of `docs`. Fails on the first problem, naming
/// the variable that uses it.
pub async fn read_all<R: RefService>(svc: &R, docs: &[Document], sel: Selection<'_>) -> Result<RefValues> {
    let mut uses: BTreeMap<Key, Vec<Use<'_>>> = BTreeMap::new();
    for (i, doc) in docs.iter().enumerate() {
        for e in doc.entries.iter().filter(|e| sel.wants(&e.name)) {
            let Value::Ref(r) = &e.value else { continue };
            let key = match r {
                Reference::Secret(s) => Key::Secret(s.arn.clone(), s.version.clone()),
                Reference::Param(p) => Key::Param(p.id.clone(), p.selector.clone()),
            };
            uses.entry(key).or_default().push(Use {
                doc: i,
                file: doc,
                entry: e,
            });
        }
    }
    if uses.is_empty() {
        return Ok(RefValues::new());
    }
    let calls = plan(svc, &uses)?;
    // One stream per service and region, each at most CONCURRENCY calls at once.
    let mut lanes: BTreeMap<(Service, String), Vec<Call>> = BTreeMap::new();
    for c in calls {
        lanes.entry((c.service(), c.region.clone())).or_default().push(c);
    }
    let lanes = lanes.into_values().map(|calls| {
        futures_util::stream::iter(calls.into_iter().map(|c| c.run(svc, &uses)))
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
    });
    let mut read: HashMap<Key, Raw> = HashMap::new();
    for lane in join_all(lanes).await {
        for got in lane {
            read.extend(got?);
        }
    }
    let mut out = RefValues::new();
    for (key, users) in &uses {
        let raw = read.get(key).ok_or_else(|| {
            // Every key is in one call, and every call answers for all its keys or fails.
            Error::new(
                crate::error::Class::Internal,
                format!("internal: no answer kept for {}", users[0].place()),
            )
        })?;
        for u in users {
            let value = deliver(u, raw)?;
            out.insert((u.doc, u.entry.name.clone()), value);
        }
    }
    Ok(out)
}

/// The answer kept for one key, before a variable's own checks (type, JSON key).
enum Raw {
    Secret(SecretData),
    Param { kind: String, value: Secret },
}

/// One call to make.
struct Call {
    region: String,
    what: CallKind,
}

enum CallKind {
    Batch(Vec<String>),
    Pinned(String, SecretVersion),
    Params(Vec<(String, Option<Selector>)>),
}

impl Call {
    fn service(&self) -> Service {
        match self.what {
            CallKind::Params(_) => Service::Ssm,
            _ => Service::SecretsManager,
        }
    }

    async fn run<R: RefService>(
        self,
        svc: &R,
        uses: &BTreeMap<Key, Vec<Use<'_>>>,
    ) -> Result<Vec<(Key, Raw)>> {
        let first_use = |key: &Key| uses.get(key).and_then(|u| u.first()).copied();
        // A whole call failed: name the variable that comes first in the files,
        // the same one on every run.
        let earliest = |keys: &[Key]| {
            keys.iter()
                .filter_map(first_use)
                .min_by_key(|u| (u.doc, u.entry.at.line, u.entry.at.column))
        };
        match self.what {
            CallKind::Batch(arns) => {
                let keys: Vec<Key> = arns
                    .iter()
                    .map(|a| Key::Secret(a.clone(), SecretVersion::Current))
                    .collect();
                let ids: Vec<&str> = arns.iter().map(String::as_str).collect();
                let answer = svc.batch_get_secrets(&self.region, &ids).await;
                let call = format!("Secrets Manager BatchGetSecretValue in {}", self.region);
                let answer =
                    answer.map_err(|e| fail_call(earliest(&keys), e, &call, Service::SecretsManager))?;
                let matched = match_secret_batch(&ids, answer)
                    .map_err(|(i, e)| fail_call(first_use(&keys[i]), e, &call, Service::SecretsManager))?;
                Ok(keys
                    .into_iter()
                    .zip(matched)
                    .map(|(k, a)| (k, Raw::Secret(a.value)))
                    .collect())
            }
            CallKind::Pinned(arn, version) => {
                let key = Key::Secret(arn.clone(), version.clone());
                let call = format!("Secrets Manager GetSecretValue in {}", self.region);
                let answer = svc
                    .get_secret(&self.region, &arn, &version)
                    .await
                    .and_then(|a| check_pinned(&arn, &version, a))
                    .map_err(|e| fail_call(first_use(&key), e, &call, Service::SecretsManager))?;
                Ok(vec![(key, Raw::Secret(answer.value))])
            }
            CallKind::Params(wanted) => {
                let names: Vec<String> = wanted
                    .iter()
                    .map(|(id, sel)| match sel {
                        Some(s) => format!("{id}{s}"),
                        None => id.clone(),
                    })
                    .collect();
                let keys: Vec<Key> = wanted
                    .iter()
                    .map(|(id, s)| Key::Param(id.clone(), s.clone()))
                    .collect();
                let call = format!("SSM GetParameters in {}", self.region);
                let answer = svc
                    .get_parameters(&self.region, &names)
                    .await
                    .map_err(|e| fail_call(earliest(&keys), e, &call, Service::Ssm))?;
                let matched = match_param_batch(&self.region, &wanted, answer)
                    .map_err(|(i, e)| fail_call(first_use(&keys[i]), e, &call, Service::Ssm))?;
                Ok(keys
                    .into_iter()
                    .zip(matched)
                    .map(|(k, a)| {
                        (
                            k,
                            Raw::Param {
                                kind: a.kind.unwrap_or_default(),
                                value: a.value.unwrap_or_else(|| Secret::new(Vec::new())),
                            },
                        )
                    })
                    .collect())
            }
        }
    }
}

/// A failed call or a refused answer, as the one error of the run: the
/// variable, the reference, the call and the AWS code.
fn fail_call(u: Option<Use<'_>>, e: AwsError, call: &str, service: Service) -> Error {
    let Some(u) = u else {
        return e.into_error("references", call, service);
    };
    let what = match &u.entry.value {
        Value::Ref(r) => format!("{} {}", r.kind(), escape(&r.to_string())),
        _ => String::new(),
    };
    e.into_error(format!("{}: {what}", u.place()), call, service)
}

/// The region a reference (`kind`: "secret", "ssm reference") is read in: its
/// ARN's, else — a parameter name — the one configured. `place` names the
/// file and variable (or the variable `set` writes).
pub fn region_of<R: RefService>(svc: &R, id: &str, kind: &str, place: &str) -> Result<String> {
    if let Some(a) = Arn::parse(id) {
        return Ok(a.region.to_string());
    }
    svc.parameter_region().ok_or_else(|| {
        Error::usage(format!(
            "{place}: the {kind} {} is a name, and no region is configured",
            escape(id)
        ))
        .with_hint("set --region or AWS_REGION, or give the ARN")
    })
}

/// A build without Parameter Store asked to read the reference `what`.
pub fn without_ssm(place: &str, what: &str) -> Error {
    Error::usage(format!(
        "{place}: this kmsenv was built without Parameter Store support, so it cannot read the ssm reference {}",
        escape(what)
    ))
    .with_hint("use the `kmsenv-full` binary from the release, or build with `--features ssm`")
}

/// Group the keys into calls: current secrets by region, 20 to a call; pinned
/// secrets one to a call; parameters by region, 10 to a call, never two
/// selectors of one name in the same call (so a name alone tells answers apart
/// when an endpoint leaves the selector out).
fn plan<R: RefService>(svc: &R, uses: &BTreeMap<Key, Vec<Use<'_>>>) -> Result<Vec<Call>> {
    let mut current: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut params: BTreeMap<String, Vec<(String, Option<Selector>)>> = BTreeMap::new();
    let mut calls = Vec::new();
    for (key, users) in uses {
        match key {
            Key::Secret(arn, version) => {
                // The file's ARN was checked when it was read: it has a region.
                let region = Arn::parse(arn).map(|a| a.region.to_string()).unwrap_or_default();
                match version {
                    SecretVersion::Current => current.entry(region).or_default().push(arn.clone()),
                    v => calls.push(Call {
                        region,
                        what: CallKind::Pinned(arn.clone(), v.clone()),
                    }),
                }
            }
            Key::Param(id, sel) => {
                if !crate::ssm::ENABLED {
                    let what = format!(
                        "{id}{}",
                        sel.as_ref().map(ToString::to_string).unwrap_or_default()
                    );
                    return Err(without_ssm(&users[0].place(), &what));
                }
                let region = region_of(svc, id, "ssm reference", &users[0].place())?;
                params.entry(region).or_default().push((id.clone(), sel.clone()));
            }
        }
    }
    for (region, arns) in current {
        for chunk in arns.chunks(SECRETS_PER_CALL) {
            calls.push(Call {
                region: region.clone(),
                what: CallKind::Batch(chunk.to_vec()),
            });
        }
    }
    for (region, wanted) in params {
        let mut batches: Vec<Vec<(String, Option<Selector>)>> = Vec::new();
        for w in wanted {
            match batches
                .iter_mut()
                .find(|b| b.len() < PARAMS_PER_CALL && !b.iter().any(|(id, _)| *id == w.0))
            {
                Some(b) => b.push(w),
                None => batches.push(vec![w]),
            }
        }
        calls.extend(batches.into_iter().map(|b| Call {
            region: region.clone(),
            what: CallKind::Params(b),
        }));
    }
    Ok(calls)
}

/// Why an answer's ARN is not the one asked for: another account or region
/// (said so), or another secret or parameter.
fn other_arn(asked: &str, answered: &str) -> AwsError {
    let why = match (Arn::parse(asked), Arn::parse(answered)) {
        (Some(a), Some(b)) if a.account != b.account || a.region != b.region => format!(
            "the answer is for {}, in another account or region than {} asked for",
            escape(answered),
            escape(asked)
        ),
        _ => format!(
            "the answer is for {}, not for {} (matched by full ARN only)",
            escape(answered),
            escape(asked)
        ),
    };
    AwsError::new("InvalidResponse", why)
}

/// Match a `BatchGetSecretValue` answer to the ARNs asked for, in their order.
/// On failure: the index of the ARN to blame and why.
fn match_secret_batch(
    asked: &[&str],
    batch: SecretBatch,
) -> std::result::Result<Vec<SecretAnswer>, (usize, AwsError)> {
    let index_of = |id: Option<&str>| id.and_then(|id| asked.iter().position(|a| *a == id)).unwrap_or(0);
    if let Some(e) = batch.errors.first() {
        let i = index_of(e.secret_id.as_deref());
        let mut error = e.error.clone();
        if let Some(id) = e.secret_id.as_deref().filter(|id| !asked.contains(id)) {
            error.message = format!(
                "{} (reported for {}, which was not asked for)",
                error.message,
                escape(id)
            );
        }
        return Err((i, error));
    }
    let mut slots: Vec<Option<SecretAnswer>> = asked.iter().map(|_| None).collect();
    for answer in batch.values {
        let Some(arn) = answer.arn.clone() else {
            return Err((0, AwsError::new("InvalidResponse", "an answer without ARN")));
        };
        let Some(i) = asked.iter().position(|a| *a == arn) else {
            // Blame the request with the same name if there is one (an answer from
            // another account or region), else the first.
            let name_of = |a: &str| Arn::parse(a).map(|p| p.resource.to_string());
            let i = asked
                .iter()
                .position(|a| name_of(a) == name_of(&arn))
                .unwrap_or(0);
            return Err((i, other_arn(asked[i], &arn)));
        };
        if slots[i].is_some() {
            return Err((
                i,
                AwsError::new("InvalidResponse", "the answer holds this secret twice"),
            ));
        }
        if !answer.stages.is_empty() && !answer.stages.iter().any(|s| s == "AWSCURRENT") {
            return Err((
                i,
                AwsError::new("InvalidResponse", "the answer is not the AWSCURRENT version"),
            ));
        }
        slots[i] = Some(answer);
    }
    every_slot(slots, "the answer left this secret out, with no error for it")
}

/// The answers in the order asked, or the first left out (`MissingFromAnswer`).
fn every_slot<T>(slots: Vec<Option<T>>, why: &str) -> std::result::Result<Vec<T>, (usize, AwsError)> {
    slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.ok_or_else(|| (i, AwsError::new("MissingFromAnswer", why))))
        .collect()
}

/// Check a `GetSecretValue` answer for a pinned version: the ARN asked for,
/// and the stage or version id asked for.
fn check_pinned(
    arn: &str,
    version: &SecretVersion,
    answer: SecretAnswer,
) -> std::result::Result<SecretAnswer, AwsError> {
    match answer.arn.as_deref() {
        Some(a) if a == arn => {}
        Some(a) => return Err(other_arn(arn, a)),
        None => return Err(AwsError::new("InvalidResponse", "an answer without ARN")),
    }
    let fits = match version {
        SecretVersion::Current => answer.stages.is_empty() || answer.stages.iter().any(|s| s == "AWSCURRENT"),
        SecretVersion::Stage(st) => answer.stages.iter().any(|s| s == st),
        SecretVersion::Id(id) => answer.version_id.as_deref() == Some(id.as_str()),
    };
    if fits {
        Ok(answer)
    } else {
        Err(AwsError::new(
            "InvalidResponse",
            "the answer is for another version than the one asked for",
        ))
    }
}

/// Match a `GetParameters` answer to `asked` (names or ARNs, selectors apart;
/// no name twice), in their order. On failure: the index to blame and why.
fn match_param_batch(
    region: &str,
    asked: &[(String, Option<Selector>)],
    batch: ParamBatch,
) -> std::result::Result<Vec<ParamAnswer>, (usize, AwsError)> {
    let text = |(id, sel): &(String, Option<Selector>)| match sel {
        Some(s) => format!("{id}{s}"),
        None => id.clone(),
    };
    if let Some(bad) = batch.invalid.first() {
        let i = asked.iter().position(|a| text(a) == *bad).unwrap_or(0);
        return Err((
            i,
            AwsError::new(
                "InvalidParameters",
                format!(
                    "Parameter Store lists {} as invalid (no such parameter or version, or not allowed)",
                    escape(bad)
                ),
            ),
        ));
    }
    let mut slots: Vec<Option<ParamAnswer>> = asked.iter().map(|_| None).collect();
    for answer in batch.params {
        let hits = |id: &String| answer.name.as_ref() == Some(id) || answer.arn.as_ref() == Some(id);
        let Some(i) = asked.iter().position(|(id, _)| hits(id)) else {
            let shown = answer
                .arn
                .as_deref()
                .or(answer.name.as_deref())
                .unwrap_or("(no name)");
            return Err((
                0,
                AwsError::new(
                    "InvalidResponse",
                    format!("the answer holds {}, which was not asked for", escape(shown)),
                ),
            ));
        };
        let (id, sel) = &asked[i];
        if slots[i].is_some() {
            return Err((
                i,
                AwsError::new("InvalidResponse", "the answer holds this parameter twice"),
            ));
        }
        let sel_ok = match (&answer.selector, sel) {
            (Some(got), Some(want)) => *got == want.to_string(),
            (Some(_), None) => false,
            (None, Some(Selector::Version(v))) => u64::try_from(answer.version).is_ok_and(|got| got == *v),
            // Without a selector in the answer (moto) a label cannot be checked;
            // the plan never puts two selectors of one name in one call.
            (None, Some(Selector::Label(_)) | None) => true,
        };
        if answer.value.is_none() || answer.kind.is_none() {
            return Err((
                i,
                AwsError::new(
                    "InvalidResponse",
                    "the answer has no Value or no Type for this parameter",
                ),
            ));
        }
        if !sel_ok {
            return Err((
                i,
                AwsError::new(
                    "InvalidResponse",
                    format!(
                        "the answer is for selector {:?} (version {}), not the one asked for",
                        answer.selector.as_deref().unwrap_or(""),
                        answer.version
                    ),
                ),
            ));
        }
        if let Some(arn) = &answer.arn {
            let fits = match Arn::parse(id) {
                Some(_) => arn == id,
                None => Arn::parse(arn).is_some_and(|a| {
                    a.region == region && a.resource.strip_prefix("parameter") == Some(&slash(id))
                }),
            };
            if !fits {
                // A name says no account: it is the caller's, so only the region
                // and the name can differ from what was asked.
                let asked_arn = match (Arn::parse(id), Arn::parse(arn)) {
                    (Some(_), _) => id.clone(),
                    (None, Some(a)) => format!(
                        "arn:{}:ssm:{region}:{}:parameter{}",
                        a.partition,
                        a.account,
                        slash(id)
                    ),
                    (None, None) => format!("{} in {region}", slash(id)),
                };
                return Err((i, other_arn(&asked_arn, arn)));
            }
        }
        slots[i] = Some(answer);
    }
    every_slot(
        slots,
        "the answer left this parameter out, and did not list it as invalid",
    )
}

/// A parameter name as its ARN ends: `/a/b` → `/a/b`, `x` → `/x`.
fn slash(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    }
}

/// The value one variable gets from its reference's answer, after its own
/// checks: type, binary, JSON key, size, NUL.
fn deliver(u: &Use<'_>, raw: &Raw) -> Result<Secret> {
    let Value::Ref(r) = &u.entry.value else {
        return Err(Error::new(
            crate::error::Class::Internal,
            "internal: not a reference",
        ));
    };
    let refuse = |why: String| {
        Error::input(format!(
            "{}: {} {}: {why}",
            u.place(),
            r.kind(),
            escape(&r.to_string())
        ))
    };
    let value = match (r, raw) {
        (Reference::Secret(s), Raw::Secret(data)) => secret_value(s, data, u.entry.file).map_err(refuse)?,
        (Reference::Param(p), Raw::Param { kind, value }) => param_value(p, kind, value).map_err(refuse)?,
        _ => {
            return Err(Error::new(
                crate::error::Class::Internal,
                "internal: answer of another kind",
            ));
        }
    };
    checked_size_and_nul(&u.entry.name, &value, u.entry.file).map_err(refuse)?;
    Ok(value)
}

fn secret_value(s: &SecretRef, data: &SecretData, file: bool) -> std::result::Result<Secret, String> {
    match (data, &s.json_key) {
        (SecretData::Text(t), None) => Ok(t.clone()),
        (SecretData::Text(t), Some(k)) => json_key(t.expose(), k).map_err(|p| p.describe(k)),
        (SecretData::Binary(_), Some(_)) => {
            Err("the secret is binary (SecretBinary): it has no JSON key".into())
        }
        (SecretData::Binary(b), None) if file => Ok(b.clone()),
        (SecretData::Binary(_), None) => {
            Err("the secret is binary (SecretBinary), which only a `file = true` variable may take".into())
        }
        (SecretData::Neither, _) => Err("the answer holds neither SecretString nor SecretBinary".into()),
    }
}

fn param_value(p: &ParamRef, kind: &str, value: &Secret) -> std::result::Result<Secret, String> {
    if kind == "StringList" {
        return Err("the parameter is a StringList, which kmsenv does not read".into());
    }
    if kind != p.kind.as_str() {
        let how = match p.kind {
            ParamType::SecureString => " (a String parameter needs `type = \"String\"` in the file)",
            ParamType::String => "",
        };
        return Err(format!(
            "the parameter is of type {}, not {}{how}",
            escape(kind),
            p.kind.as_str()
        ));
    }
    Ok(value.clone())
}

/// Why a test read (`set --secret`, `set --ssm`) failed: the call, or the value.
#[derive(Debug)]
pub enum TestReadError {
    Aws(AwsError),
    /// The value would be refused at start-up: why (never the value).
    Value(String),
}

impl From<AwsError> for TestReadError {
    fn from(e: AwsError) -> Self {
        TestReadError::Aws(e)
    }
}

/// `set --secret`: read `id` (a name, a partial or a full ARN) once as the
/// file would, check the value as a variable `name` would take it, and return
/// the full ARN from the answer — so users need not know the suffix. A name
/// is looked up in `region`; an ARN in its own.
pub async fn test_read_secret<R: RefService>(
    svc: &R,
    region: &str,
    id: &str,
    s: &SecretRef,
    name: &str,
    file: bool,
) -> std::result::Result<String, TestReadError> {
    let answer = svc.get_secret(region, id, &s.version).await?;
    let arn = answer
        .arn
        .clone()
        .ok_or_else(|| AwsError::new("InvalidResponse", "an answer without ARN"))?;
    let parsed = Arn::parse(&arn).filter(|_| crate::reference::check_secret_arn(&arn).is_ok());
    let asked = Arn::parse(id);
    let asked_name = match &asked {
        Some(a) => a.resource.strip_prefix("secret:").unwrap_or(a.resource),
        None => id,
    };
    // The answer must be the secret asked for: the same ARN, or the ARN of
    // the name (`NAME-` and six characters), in the region asked — and, for a
    // partial ARN, in its partition and account.
    let fits = parsed.is_some_and(|a| {
        let base = a
            .resource
            .strip_prefix("secret:")
            .and_then(|n| n.rsplit_once('-'))
            .map(|(b, _)| b);
        let same_account = asked
            .as_ref()
            .is_none_or(|q| q.partition == a.partition && q.account == a.account);
        a.region == region && same_account && (arn == id || base == Some(asked_name))
    });
    if !fits {
        return Err(AwsError::new(
            "InvalidResponse",
            format!("the answer is for {}, not for {}", escape(&arn), escape(id)),
        )
        .into());
    }
    let answer = check_pinned(&arn, &s.version, answer)?;
    let value = secret_value(s, &answer.value, file).map_err(TestReadError::Value)?;
    checked_size_and_nul(name, &value, file).map_err(TestReadError::Value)?;
    Ok(arn)
}

/// `set --ssm`: read the parameter once as the file would and check the value
/// as a variable `name` would take it.
pub async fn test_read_param<R: RefService>(
    svc: &R,
    region: &str,
    p: &ParamRef,
    name: &str,
    file: bool,
) -> std::result::Result<(), TestReadError> {
    let asked = [(p.id.clone(), p.selector.clone())];
    let batch = svc.get_parameters(region, &[p.text()]).await?;
    let mut got = match_param_batch(region, &asked, batch).map_err(|(_, e)| e)?;
    let answer = got
        .pop()
        .ok_or_else(|| AwsError::new("MissingFromAnswer", "no parameter"))?;
    let value = param_value(
        p,
        answer.kind.as_deref().unwrap_or_default(),
        &answer.value.unwrap_or_else(|| Secret::new(Vec::new())),
    )
    .map_err(TestReadError::Value)?;
    checked_size_and_nul(name, &value, file).map_err(TestReadError::Value)
}

/// The size and NUL rules every value from a reference passes.
fn checked_size_and_nul(name: &str, value: &Secret, file: bool) -> std::result::Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "the value is {} bytes, more than the {MAX_VALUE_BYTES} kmsenv takes",
            value.len()
        ));
    }
    match value_rule(name, value.expose(), file) {
        Some(why) => Err(format!("{why} (deliver it with `file = true`)")),
        None => Ok(()),
    }
}

/// Why a JSON key could not be taken from a secret. Carries no bytes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonProblem {
    /// Not one valid JSON document.
    Invalid,
    /// Valid JSON, but not an object.
    NotObject,
    Missing,
    /// The key's value is not a string: what it is.
    NotString(&'static str),
    /// The key is there more than once (after unescaping).
    Duplicate,
}

impl JsonProblem {
    pub fn describe(&self, key: &str) -> String {
        let key = escape(key);
        match self {
            JsonProblem::Invalid => {
                "the secret is not valid JSON, so `json_key` cannot be read from it".into()
            }
            JsonProblem::NotObject => "the secret is JSON but not an object, so it has no keys".into(),
            JsonProblem::Missing => format!("the secret has no top-level key {key:?}"),
            JsonProblem::NotString(kind) => {
                format!("the secret's key {key:?} holds {kind}, not a string (only string values are taken)")
            }
            JsonProblem::Duplicate => {
                format!("the secret has the key {key:?} more than once: which one is meant is not clear")
            }
        }
    }
}

/// The string value of the exact top-level `key` of the JSON object `doc`. The
/// whole document must be valid JSON, every string in it well escaped, and the
/// key there once.
pub fn json_key(doc: &[u8], key: &str) -> std::result::Result<Secret, JsonProblem> {
    use aws_smithy_json::deserialize::{Token, json_token_iter};
    let mut tokens = json_token_iter(doc);
    let mut depth = 0usize;
    let mut ours_next = false;
    let mut found: Option<std::result::Result<Secret, JsonProblem>> = None;
    let mut duplicate = false;
    let mut first = true;
    for token in tokens.by_ref() {
        let token = token.map_err(|_| JsonProblem::Invalid)?;
        if first && !matches!(token, Token::StartObject { .. }) {
            // Still the whole document must be valid.
            return Err(if json_valid(doc) {
                JsonProblem::NotObject
            } else {
                JsonProblem::Invalid
            });
        }
        first = false;
        if std::mem::take(&mut ours_next) {
            let got = match &token {
                Token::ValueString { value, .. } => {
                    let text = value.to_unescaped().map_err(|_| JsonProblem::Invalid)?;
                    Ok(Secret::new(Zeroizing::new(text.into_owned()).as_bytes().to_vec()))
                }
                Token::StartObject { .. } => Err(JsonProblem::NotString("an object")),
                Token::StartArray { .. } => Err(JsonProblem::NotString("an array")),
                Token::ValueNumber { .. } => Err(JsonProblem::NotString("a number")),
                Token::ValueBool { .. } => Err(JsonProblem::NotString("a boolean")),
                _ => Err(JsonProblem::NotString("null")),
            };
            if found.is_some() {
                duplicate = true;
            }
            found = Some(got);
        } else if let Token::ValueString { value, .. } = &token {
            // Every string must unescape (lone surrogates, bad escapes).
            drop(Zeroizing::new(
                value
                    .to_unescaped()
                    .map_err(|_| JsonProblem::Invalid)?
                    .into_owned(),
            ));
        }
        match token {
            Token::StartObject { .. } | Token::StartArray { .. } => depth += 1,
            Token::EndObject { .. } | Token::EndArray { .. } => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Token::ObjectKey { key: k, .. } => {
                let k = k.to_unescaped().map_err(|_| JsonProblem::Invalid)?;
                ours_next = depth == 1 && k == key;
            }
            _ => {}
        }
    }
    // One document: nothing after the object but whitespace.
    if depth != 0 || first || tokens.next().is_some() {
        return Err(JsonProblem::Invalid);
    }
    if duplicate {
        return Err(JsonProblem::Duplicate);
    }
    found.unwrap_or(Err(JsonProblem::Missing))
}

/// Whether `doc` is exactly one valid JSON value.
fn json_valid(doc: &[u8]) -> bool {
    use aws_smithy_json::deserialize::{Token, json_token_iter};
    let mut depth = 0usize;
    let mut tokens = json_token_iter(doc);
    let mut seen = false;
    for token in tokens.by_ref() {
        let Ok(token) = token else { return false };
        seen = true;
        match token {
            Token::StartObject { .. } | Token::StartArray { .. } => depth += 1,
            Token::EndObject { .. } | Token::EndArray { .. } => depth = depth.saturating_sub(1),
            Token::ValueString { value, .. } if value.to_unescaped().is_err() => return false,
            Token::ObjectKey { key, .. } if key.to_unescaped().is_err() => return false,
            _ => {}
        }
        if depth == 0 {
            break;
        }
    }
    seen && depth == 0 && tokens.next().is_none()
}

/// How many selected entries of `doc` are references (`check` reports it).
pub fn count(doc: &Document, sel: Selection<'_>) -> usize {
    doc.entries
        .iter()
        .filter(|e| matches!(e.value, Value::Ref(_)) && sel.wants(&e.name))
        .count()
}

#[cfg(test)]
pub mod fake {
    //! References read from memory, for unit tests: secrets by ARN (current
    //! version only) and parameters by name; `calls` counts the calls.

    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use super::*;
    use crate::kms::fake::FakeKms;

    #[derive(Default)]
    pub struct FakeRefs {
        /// ARN → SecretString.
        pub secrets: RefCell<HashMap<String, String>>,
        /// Name → (type, version, value).
        pub params: RefCell<HashMap<String, (String, i64, String)>>,
        pub calls: Cell<usize>,
    }

    impl RefService for FakeKms {
        async fn batch_get_secrets(
            &self,
            _: &str,
            arns: &[&str],
        ) -> std::result::Result<SecretBatch, AwsError> {
            let f = &self.refs;
            f.calls.set(f.calls.get() + 1);
            let secrets = f.secrets.borrow();
            let mut batch = SecretBatch::default();
            for a in arns {
                match secrets.get(*a) {
                    Some(v) => batch.values.push(SecretAnswer {
                        arn: Some(a.to_string()),
                        version_id: Some("v1".into()),
                        stages: vec!["AWSCURRENT".into()],
                        value: SecretData::Text(Secret::new(v.clone().into_bytes())),
                    }),
                    None => batch.errors.push(BatchError {
                        secret_id: Some(a.to_string()),
                        error: AwsError::new("ResourceNotFoundException", "no such secret in the fake"),
                    }),
                }
            }
            Ok(batch)
        }

        /// The current version, found by ARN, partial ARN or name (as AWS does).
        async fn get_secret(
            &self,
            _: &str,
            id: &str,
            version: &SecretVersion,
        ) -> std::result::Result<SecretAnswer, AwsError> {
            let f = &self.refs;
            f.calls.set(f.calls.get() + 1);
            let secrets = f.secrets.borrow();
            let named = |arn: &str| {
                arn == id
                    || arn
                        .strip_prefix(id)
                        .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-'))
                    || arn
                        .split_once(":secret:")
                        .and_then(|(_, n)| n.rsplit_once('-'))
                        .is_some_and(|(n, _)| n == id)
            };
            match (secrets.iter().find(|(arn, _)| named(arn)), version) {
                (Some((arn, v)), SecretVersion::Current) => Ok(SecretAnswer {
                    arn: Some(arn.clone()),
                    version_id: Some("v1".into()),
                    stages: vec!["AWSCURRENT".into()],
                    value: SecretData::Text(Secret::new(v.clone().into_bytes())),
                }),
                _ => Err(AwsError::new(
                    "ResourceNotFoundException",
                    "not in the fake (current versions only)",
                )),
            }
        }

        async fn get_parameters(
            &self,
            _: &str,
            names: &[String],
        ) -> std::result::Result<ParamBatch, AwsError> {
            let f = &self.refs;
            f.calls.set(f.calls.get() + 1);
            let params = f.params.borrow();
            let mut batch = ParamBatch::default();
            for n in names {
                // As Parameter Store answers: the name, and the selector apart.
                let (name, selector) = match n.split_once(':') {
                    Some((name, sel)) => (name.to_string(), Some(format!(":{sel}"))),
                    None => (n.clone(), None),
                };
                match params.get(n) {
                    Some((kind, version, value)) => batch.params.push(ParamAnswer {
                        name: Some(name),
                        arn: None,
                        kind: Some(kind.clone()),
                        version: *version,
                        selector,
                        value: Some(Secret::new(value.clone().into_bytes())),
                    }),
                    None => batch.invalid.push(n.clone()),
                }
            }
            Ok(batch)
        }

        fn parameter_region(&self) -> Option<String> {
            Some("eu-west-1".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TestResult;
    use crate::kms::fake::{FakeKms, block_on};
    use std::path::Path;

    const A: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:a-AbCdEf";
    const B: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:b-AbCdEf";

    fn text(s: &str) -> SecretData {
        SecretData::Text(Secret::new(s.as_bytes().to_vec()))
    }

    fn answer(arn: &str, value: &str) -> SecretAnswer {
        SecretAnswer {
            arn: Some(arn.into()),
            version_id: Some("v1".into()),
            stages: vec!["AWSCURRENT".into()],
            value: text(value),
        }
    }

    fn values(got: Vec<SecretAnswer>) -> Vec<Vec<u8>> {
        got.into_iter()
            .map(|a| match a.value {
                SecretData::Text(t) => t.expose().to_vec(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn batch_answers_are_matched_by_arn_not_position() -> TestResult {
        let batch = SecretBatch {
            values: vec![answer(B, "for-b"), answer(A, "for-a")],
            errors: vec![],
        };
        let got = match_secret_batch(&[A, B], batch).map_err(|(_, e)| e)?;
        assert_eq!(values(got), [b"for-a".to_vec(), b"for-b".to_vec()]);
        Ok(())
    }

    #[test]
    fn a_batch_that_leaves_a_secret_out_fails_naming_it() {
        let batch = SecretBatch {
            values: vec![answer(A, "x")],
            errors: vec![],
        };
        let (i, e) = match_secret_batch(&[A, B], batch).unwrap_err();
        assert_eq!((i, e.code.as_str()), (1, "MissingFromAnswer"));
    }

    #[test]
    fn a_batch_errors_entry_fails_with_its_code_for_its_secret() {
        let batch = SecretBatch {
            values: vec![answer(A, "x")],
            errors: vec![BatchError {
                secret_id: Some(B.into()),
                error: AwsError::new("DecryptionFailure", "no"),
            }],
        };
        let (i, e) = match_secret_batch(&[A, B], batch).unwrap_err();
        assert_eq!((i, e.code.as_str()), (1, "DecryptionFailure"));
    }

    #[test]
    fn an_answer_from_another_account_or_region_fails() {
        for other in [
            "arn:aws:secretsmanager:eu-west-1:999999999999:secret:a-AbCdEf",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:a-AbCdEf",
        ] {
            let batch = SecretBatch {
                values: vec![answer(other, "x"), answer(B, "y")],
                errors: vec![],
            };
            let (i, e) = match_secret_batch(&[A, B], batch).unwrap_err();
            assert_eq!(i, 0);
            assert!(e.message.contains("another account or region"), "{e}");
        }
    }

    #[test]
    fn an_answer_for_a_secret_whose_arn_only_ends_alike_fails() {
        // A suffix match would take it: the match is on the whole ARN.
        let longer = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:xa-AbCdEf";
        let batch = SecretBatch {
            values: vec![answer(longer, "x")],
            errors: vec![],
        };
        let (_, e) = match_secret_batch(&[A], batch).unwrap_err();
        assert_eq!(e.code, "InvalidResponse");
    }

    #[test]
    fn a_secret_answered_twice_or_not_current_fails() {
        let twice = SecretBatch {
            values: vec![answer(A, "x"), answer(A, "y")],
            errors: vec![],
        };
        assert!(match_secret_batch(&[A], twice).is_err());
        let mut old = answer(A, "x");
        old.stages = vec!["AWSPREVIOUS".into()];
        let batch = SecretBatch {
            values: vec![old],
            errors: vec![],
        };
        assert!(match_secret_batch(&[A], batch).is_err());
    }

    #[test]
    fn a_pinned_answer_must_carry_the_stage_or_id_asked_for() {
        let stage = SecretVersion::Stage("AWSPREVIOUS".into());
        assert!(check_pinned(A, &stage, answer(A, "x")).is_err());
        let mut prev = answer(A, "x");
        prev.stages = vec!["AWSPREVIOUS".into()];
        assert!(check_pinned(A, &stage, prev).is_ok());
        assert!(check_pinned(A, &SecretVersion::Id("v2".into()), answer(A, "x")).is_err());
        assert!(check_pinned(A, &SecretVersion::Id("v1".into()), answer(A, "x")).is_ok());
        assert!(check_pinned(B, &SecretVersion::Id("v1".into()), answer(A, "x")).is_err());
    }

    fn param(name: &str, version: i64, selector: Option<&str>) -> ParamAnswer {
        ParamAnswer {
            name: Some(name.into()),
            arn: Some(format!("arn:aws:ssm:eu-west-1:111122223333:parameter{name}")),
            kind: Some("SecureString".into()),
            version,
            selector: selector.map(Into::into),
            value: Some(Secret::new(name.as_bytes().to_vec())),
        }
    }

    fn ask(id: &str, sel: Option<Selector>) -> (String, Option<Selector>) {
        (id.to_string(), sel)
    }

    #[test]
    fn parameters_are_matched_by_name_and_selector() -> TestResult {
        let asked = [ask("/a", Some(Selector::Version(3))), ask("/b", None)];
        let batch = ParamBatch {
            params: vec![param("/b", 1, None), param("/a", 3, Some(":3"))],
            invalid: vec![],
        };
        let got = match_param_batch("eu-west-1", &asked, batch).map_err(|(_, e)| e)?;
        let names: Vec<_> = got.iter().map(|p| p.name.clone().unwrap_or_default()).collect();
        assert_eq!(names, ["/a", "/b"]);
        Ok(())
    }

    #[test]
    fn without_a_selector_in_the_answer_a_version_must_equal_the_one_asked() {
        let asked = [ask("/a", Some(Selector::Version(3)))];
        let batch = ParamBatch {
            params: vec![param("/a", 4, None)],
            invalid: vec![],
        };
        assert!(match_param_batch("eu-west-1", &asked, batch).is_err());
        let wrong_label = ParamBatch {
            params: vec![param("/a", 3, Some(":old"))],
            invalid: vec![],
        };
        let asked = [ask("/a", Some(Selector::Label("live".into())))];
        assert!(match_param_batch("eu-west-1", &asked, wrong_label).is_err());
        // Asked with no selector, answered for one.
        let asked = [ask("/a", None)];
        let batch = ParamBatch {
            params: vec![param("/a", 3, Some(":3"))],
            invalid: vec![],
        };
        assert!(match_param_batch("eu-west-1", &asked, batch).is_err());
    }

    #[test]
    fn invalid_parameters_or_a_missing_one_fail_naming_it() {
        let asked = [ask("/a", None), ask("/b", Some(Selector::Version(2)))];
        let batch = ParamBatch {
            params: vec![param("/a", 1, None)],
            invalid: vec!["/b:2".into()],
        };
        let (i, e) = match_param_batch("eu-west-1", &asked, batch).unwrap_err();
        assert_eq!((i, e.code.as_str()), (1, "InvalidParameters"));
        let batch = ParamBatch {
            params: vec![param("/a", 1, None)],
            invalid: vec![],
        };
        let (i, e) = match_param_batch("eu-west-1", &asked, batch).unwrap_err();
        assert_eq!((i, e.code.as_str()), (1, "MissingFromAnswer"));
    }

    #[test]
    fn a_parameter_from_another_region_or_account_fails() {
        let mut other = param("/a", 1, None);
        other.arn = Some("arn:aws:ssm:us-east-1:111122223333:parameter/a".into());
        let batch = ParamBatch {
            params: vec![other],
            invalid: vec![],
        };
        let (_, e) = match_param_batch("eu-west-1", &[ask("/a", None)], batch).unwrap_err();
        assert!(e.message.contains("another account or region"), "{e}");
        let asked_arn = "arn:aws:ssm:eu-west-1:111122223333:parameter/a";
        let mut other = param("/a", 1, None);
        other.arn = Some("arn:aws:ssm:eu-west-1:999999999999:parameter/a".into());
        other.name = Some(asked_arn.into());
        let batch = ParamBatch {
            params: vec![other],
            invalid: vec![],
        };
        let (_, e) = match_param_batch("eu-west-1", &[ask(asked_arn, None)], batch).unwrap_err();
        assert!(e.message.contains("another account or region"), "{e}");
    }

    fn key_of(doc: &str, key: &str) -> std::result::Result<String, JsonProblem> {
        json_key(doc.as_bytes(), key).map(|s| String::from_utf8_lossy(s.expose()).into_owned())
    }

    #[test]
    fn json_key_takes_the_exact_top_level_string() {
        let doc = r#"{"user":"app","password":"p\"w\u00e9","nested":{"password":"no"}}"#;
        assert_eq!(key_of(doc, "password"), Ok("p\"wé".into()));
        assert_eq!(key_of(doc, "Password"), Err(JsonProblem::Missing));
        assert_eq!(
            key_of(r#"{"nested":{"password":"no"}}"#, "password"),
            Err(JsonProblem::Missing)
        );
    }

    #[test]
    fn json_key_matches_escaped_keys_after_unescaping() {
        assert_eq!(key_of(r#"{"pass\u0077ord":"x"}"#, "password"), Ok("x".into()));
        assert_eq!(
            key_of(r#"{"pass\u0077ord":"x","password":"y"}"#, "password"),
            Err(JsonProblem::Duplicate)
        );
    }

    #[test]
    fn json_key_refuses_a_value_that_is_not_a_string() {
        assert_eq!(
            key_of(r#"{"port":5432}"#, "port"),
            Err(JsonProblem::NotString("a number"))
        );
        assert_eq!(key_of(r#"{"p":null}"#, "p"), Err(JsonProblem::NotString("null")));
        assert_eq!(
            key_of(r#"{"p":{"a":"b"}}"#, "p"),
            Err(JsonProblem::NotString("an object"))
        );
        assert_eq!(
            key_of(r#"{"p":["a"]}"#, "p"),
            Err(JsonProblem::NotString("an array"))
        );
    }

    #[test]
    fn json_key_refuses_what_is_not_one_valid_json_object() {
        assert_eq!(key_of("not json", "p"), Err(JsonProblem::Invalid));
        assert_eq!(key_of(r#"{"p":"x"} {"p":"y"}"#, "p"), Err(JsonProblem::Invalid));
        assert_eq!(key_of(r#"{"p":"x""#, "p"), Err(JsonProblem::Invalid));
        assert_eq!(
            key_of(r#"{"p":"x","q":"\ud800"}"#, "p"),
            Err(JsonProblem::Invalid)
        );
        assert_eq!(key_of(r#"["p"]"#, "p"), Err(JsonProblem::NotObject));
        assert_eq!(key_of(r#""p""#, "p"), Err(JsonProblem::NotObject));
        assert_eq!(key_of("", "p"), Err(JsonProblem::Invalid));
        assert_eq!(key_of("{\"p\":\"x\"}\n ", "p"), Ok("x".into()));
    }

    fn doc(env: &str) -> Result<Document> {
        Document::parse(
            Path::new("r.toml"),
            format!("[kmsenv]\nversion = 2\n[env]\n{env}"),
        )
    }

    #[test]
    fn a_reference_used_twice_is_read_once_and_45_secrets_take_3_calls() -> TestResult {
        let kms = FakeKms::default();
        let mut env = String::new();
        for i in 0..45 {
            let arn = format!("arn:aws:secretsmanager:eu-west-1:111122223333:secret:s{i}-AbCdEf");
            kms.refs.secrets.borrow_mut().insert(arn.clone(), format!("v{i}"));
            env += &format!("S{i} = {{ secret = \"{arn}\" }}\n");
        }
        env += &format!(
            "AGAIN = {{ secret = \"{}\" }}\n",
            "arn:aws:secretsmanager:eu-west-1:111122223333:secret:s0-AbCdEf"
        );
        let d = doc(&env)?;
        let got = block_on(read_all(&kms, std::slice::from_ref(&d), Selection::ALL))??;
        assert_eq!(kms.refs.calls.get(), 3);
        assert_eq!(got.len(), 46);
        assert_eq!(
            got.get(&(0, "AGAIN".into())).map(|s| s.expose().to_vec()),
            Some(b"v0".to_vec())
        );
        assert_eq!(
            got.get(&(0, "S44".into())).map(|s| s.expose().to_vec()),
            Some(b"v44".to_vec())
        );
        Ok(())
    }

    #[test]
    fn a_missing_secret_fails_naming_file_variable_reference_and_code() -> TestResult {
        let kms = FakeKms::default();
        let d = doc(&format!("DB = {{ secret = \"{A}\" }}\n"))?;
        let err = block_on(read_all(&kms, std::slice::from_ref(&d), Selection::ALL))?.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("r.toml:4:1: DB: secret arn:aws:secretsmanager"),
            "{text}"
        );
        assert!(text.contains("ResourceNotFoundException"), "{text}");
        assert_eq!(err.exit_code(), 125);
        Ok(())
    }

    #[test]
    fn a_nul_byte_for_the_environment_or_a_binary_secret_without_file_fails() {
        let env_entry = |file| Entry {
            name: "T".into(),
            value: Value::Ref(Reference::Secret(SecretRef {
                arn: A.into(),
                json_key: None,
                version: SecretVersion::Current,
            })),
            file,
            at: Default::default(),
        };
        let d = Document::parse(Path::new("r.toml"), "[kmsenv]\nversion = 2\n".into());
        let Ok(d) = d else { panic!("an empty file parses") };
        let (plain, as_file) = (env_entry(false), env_entry(true));
        let u = |entry| Use {
            doc: 0,
            file: &d,
            entry,
        };
        let nul = Raw::Secret(text("a\0b"));
        assert!(deliver(&u(&plain), &nul).unwrap_err().to_string().contains("NUL"));
        assert!(deliver(&u(&as_file), &nul).is_ok());
        let bin = Raw::Secret(SecretData::Binary(Secret::new(vec![1, 2])));
        assert!(
            deliver(&u(&plain), &bin)
                .unwrap_err()
                .to_string()
                .contains("file = true")
        );
        assert!(deliver(&u(&as_file), &bin).is_ok());
        let big = Raw::Secret(text(&"x".repeat(MAX_VALUE_BYTES + 1)));
        assert!(
            deliver(&u(&as_file), &big)
                .unwrap_err()
                .to_string()
                .contains("more than")
        );
    }

    #[test]
    fn a_parameter_of_another_type_fails() -> TestResult {
        let kms = FakeKms::default();
        kms.refs
            .params
            .borrow_mut()
            .insert("/p".into(), ("String".into(), 1, "v".into()));
        let d = doc("P = { ssm = \"/p\" }\n")?;
        let got = block_on(read_all(&kms, std::slice::from_ref(&d), Selection::ALL))?;
        if crate::ssm::ENABLED {
            let text = got.unwrap_err().to_string();
            assert!(text.contains("of type String, not SecureString"), "{text}");
            let d = doc("P = { ssm = \"/p\", type = \"String\" }\n")?;
            assert!(block_on(read_all(&kms, std::slice::from_ref(&d), Selection::ALL))?.is_ok());
        } else {
            let err = got.unwrap_err();
            assert!(
                err.to_string().contains("without Parameter Store support"),
                "{err}"
            );
            assert!(err.hint().is_some_and(|h| h.contains("kmsenv-full")), "{err:?}");
        }
        Ok(())
    }

    #[test]
    fn ten_parameters_take_one_call_and_two_selectors_of_one_name_two() -> TestResult {
        if !crate::ssm::ENABLED {
            return Ok(());
        }
        let kms = FakeKms::default();
        let mut env = String::new();
        for i in 0..10 {
            kms.refs
                .params
                .borrow_mut()
                .insert(format!("/p{i}"), ("SecureString".into(), 1, format!("v{i}")));
            env += &format!("P{i} = {{ ssm = \"/p{i}\" }}\n");
        }
        block_on(read_all(&kms, std::slice::from_ref(&doc(&env)?), Selection::ALL))??;
        assert_eq!(kms.refs.calls.get(), 1);
        kms.refs
            .params
            .borrow_mut()
            .insert("/p0:1".into(), ("SecureString".into(), 1, "v0".into()));
        env += "OLD = { ssm = \"/p0:1\" }\n";
        kms.refs.calls.set(0);
        block_on(read_all(&kms, std::slice::from_ref(&doc(&env)?), Selection::ALL))??;
        assert_eq!(kms.refs.calls.get(), 2);
        Ok(())
    }
}

/// `set --secret` with a partial ARN: an answer from another account (same name,
/// same region) is not the secret asked for, and is not written.
#[cfg(test)]
mod test_read {
    use super::*;
    use crate::kms::fake::block_on;

    /// A Secrets Manager that answers every `GetSecretValue` with the secret of
    /// the same name in account 999999999999.
    struct OtherAccount;

    impl RefService for OtherAccount {
        async fn batch_get_secrets(&self, _: &str, _: &[&str]) -> std::result::Result<SecretBatch, AwsError> {
            Err(AwsError::new("Unexpected", "not asked in this test"))
        }

        async fn get_secret(
            &self,
            _: &str,
            _: &str,
            _: &SecretVersion,
        ) -> std::result::Result<SecretAnswer, AwsError> {
            Ok(SecretAnswer {
                arn: Some("arn:aws:secretsmanager:eu-west-1:999999999999:secret:db-AbCdEf".into()),
                version_id: Some("v1".into()),
                stages: vec!["AWSCURRENT".into()],
                value: SecretData::Text(Secret::new(b"theirs".to_vec())),
            })
        }

        async fn get_parameters(&self, _: &str, _: &[String]) -> std::result::Result<ParamBatch, AwsError> {
            Err(AwsError::new("Unexpected", "not asked in this test"))
        }

        fn parameter_region(&self) -> Option<String> {
            None
        }
    }

    #[test]
    fn a_partial_arn_answered_from_another_account_is_refused() -> crate::error::TestResult {
        let s = SecretRef {
            arn: String::new(),
            json_key: None,
            version: SecretVersion::Current,
        };
        let mine = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:db";
        match block_on(test_read_secret(
            &OtherAccount,
            "eu-west-1",
            mine,
            &s,
            "DB",
            false,
        ))? {
            Err(TestReadError::Aws(e)) => assert_eq!(e.code, "InvalidResponse", "{e:?}"),
            other => panic!("the other account's secret was taken: {:?}", other.ok()),
        }
        // By name alone the account is the caller's: whatever answers is taken.
        assert!(
            block_on(test_read_secret(
                &OtherAccount,
                "eu-west-1",
                "db",
                &s,
                "DB",
                false
            ))?
            .is_ok()
        );
        Ok(())
    }
}
