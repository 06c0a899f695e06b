//! Certificates in the cluster, judged offline: the trust anchor every proxy
//! verifies peers against, and the webhook's caBundle.

use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use super::Verdict;

/// What a PEM bundle holds, as far as a check cares.
#[derive(Debug)]
pub(crate) struct Bundle {
    /// Subject and not-after (Unix seconds) of each certificate.
    pub certs: Vec<(String, i64)>,
    /// Subjects that are not CA certificates (basicConstraints CA:TRUE).
    pub not_ca: Vec<String>,
    /// Subjects not valid yet at the time of the check.
    pub not_yet_valid: Vec<String>,
}

/// Parses every `CERTIFICATE` block of `pem`; an error names what is wrong.
pub(crate) fn parse_bundle(pem: &[u8], now: i64) -> Result<Bundle, String> {
    let mut bundle = Bundle { certs: Vec::new(), not_ca: Vec::new(), not_yet_valid: Vec::new() };
    for (i, block) in x509_parser::pem::Pem::iter_from_buffer(pem).enumerate() {
        let block = block.map_err(|e| format!("PEM block {}: {e}", i + 1))?;
        if block.label != "CERTIFICATE" {
            return Err(format!("PEM block {} is a {}, not a CERTIFICATE", i + 1, block.label));
        }
        let (_, cert) = X509Certificate::from_der(&block.contents)
            .map_err(|e| format!("PEM block {}: not an X.509 certificate: {e}", i + 1))?;
        let subject = cert.subject().to_string();
        if !cert.is_ca() {
            bundle.not_ca.push(subject.clone());
        }
        if cert.validity().not_before.timestamp() > now {
            bundle.not_yet_valid.push(subject.clone());
        }
        bundle.certs.push((subject, cert.validity().not_after.timestamp()));
    }
    if bundle.certs.is_empty() {
        return Err("no PEM CERTIFICATE block".to_owned());
    }
    Ok(bundle)
}

/// The trust anchor's verdict: fail when unusable or expired, warn when it
/// expires within `warning`, else pass. Returns (verdict, detail, hint).
pub(crate) fn anchor_verdict(pem: &[u8], now: i64, warning: Duration) -> (Verdict, String, Option<String>) {
    const ROTATE: &str = "rotate the trust anchor (a new CA, then `weft install` with it) before proxies stop trusting each other";
    let bundle = match parse_bundle(pem, now) {
        Ok(b) => b,
        Err(e) => return (Verdict::Fail, e, Some("re-create the trust anchor ConfigMap with `weft install`".to_owned())),
    };
    if !bundle.not_ca.is_empty() {
        return (
            Verdict::Fail,
            format!("not a CA certificate: {}", bundle.not_ca.join("; ")),
            Some("the trust anchor must be a CA certificate (basicConstraints CA:TRUE)".to_owned()),
        );
    }
    if !bundle.not_yet_valid.is_empty() {
        return (
            Verdict::Fail,
            format!("not valid yet: {}", bundle.not_yet_valid.join("; ")),
            Some("check the clocks of this machine and of the cluster's nodes".to_owned()),
        );
    }
    let (subject, not_after) = bundle.certs.iter().min_by_key(|(_, t)| *t).expect("parse_bundle returns at least one");
    let left = not_after - now;
    let days = left.div_euclid(86_400);
    if left <= 0 {
        return (Verdict::Fail, format!("{subject} expired {} days ago", -days), Some(ROTATE.to_owned()));
    }
    let detail = format!("{subject}, expires in {days} days");
    if u64::try_from(left).unwrap_or(0) < warning.as_secs() {
        let hint = format!("{ROTATE} (warning window: {})", humantime::format_duration(warning));
        return (Verdict::Warn, format!("expiring soon: {detail}"), Some(hint));
    }
    (Verdict::Pass, detail, None)
}

/// The webhook's serving certificate (the first of `chain_pem`) against the
/// caBundle the API server verifies it with: signed by one of the bundle's
/// certificates, naming `dns_name`, valid now; a warning within `warning` of
/// its expiry. Returns (verdict, detail, hint).
pub(crate) fn serving_verdict(
    chain_pem: &[u8],
    bundle_pem: &[u8],
    dns_name: &str,
    now: i64,
    warning: Duration,
) -> (Verdict, String, Option<String>) {
    let blocks: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(chain_pem).filter_map(Result::ok).collect();
    let Some(leaf) = blocks.first().and_then(|b| X509Certificate::from_der(&b.contents).ok().map(|(_, c)| c)) else {
        return (Verdict::Fail, "tls.crt holds no PEM certificate".to_owned(), None);
    };
    let bundle: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(bundle_pem).filter_map(Result::ok).collect();
    let signed = bundle.iter().any(|b| {
        X509Certificate::from_der(&b.contents).is_ok_and(|(_, ca)| leaf.verify_signature(Some(ca.public_key())).is_ok())
    });
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let subject = leaf.subject().to_string();
    let not_after = leaf.validity().not_after.timestamp();
    let mut problems = Vec::new();
    if !signed {
        problems.push(format!("{subject} is not signed by any certificate of the caBundle"));
    }
    if !names.iter().any(|n| n == dns_name) {
        problems.push(format!("it names {names:?}, not {dns_name}"));
    }
    if leaf.validity().not_before.timestamp() > now {
        problems.push("it is not valid yet".to_owned());
    }
    if not_after <= now {
        problems.push(format!("it expired {} days ago", (now - not_after).div_euclid(86_400)));
    }
    let days = (not_after - now).div_euclid(86_400);
    if !problems.is_empty() {
        return (Verdict::Fail, problems.join("; "), None);
    }
    if u64::try_from(not_after - now).unwrap_or(0) < warning.as_secs() {
        return (Verdict::Warn, format!("{dns_name}, signed by the caBundle, expiring soon: in {days} days"), None);
    }
    (Verdict::Pass, format!("{dns_name}, signed by the caBundle, expires in {days} days"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn ca(not_after_days: i64, is_ca: bool) -> (String, i64) {
        let now = time::OffsetDateTime::now_utc();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "weft test anchor");
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(not_after_days);
        if is_ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap().pem(), now.unix_timestamp())
    }

    #[test]
    fn anchor_verdicts() {
        let warn = Duration::from_secs(30 * DAY as u64);
        let (pem, now) = ca(365, true);
        let (v, detail, hint) = anchor_verdict(pem.as_bytes(), now, warn);
        assert_eq!((v, hint), (Verdict::Pass, None), "{detail}");
        assert!(detail.contains("weft test anchor") && detail.contains("expires in 36"), "{detail}");

        let (pem, now) = ca(10, true);
        let (v, detail, _) = anchor_verdict(pem.as_bytes(), now, warn);
        assert_eq!(v, Verdict::Warn, "{detail}");
        assert!(detail.contains("expiring soon"), "{detail}");
        // The same anchor with a shorter warning window passes.
        assert_eq!(anchor_verdict(pem.as_bytes(), now, Duration::from_secs(5 * DAY as u64)).0, Verdict::Pass);
        // ... and fails once it has expired.
        let (v, detail, _) = anchor_verdict(pem.as_bytes(), now + 11 * DAY, warn);
        assert_eq!(v, Verdict::Fail, "{detail}");
        assert!(detail.contains("expired"), "{detail}");
        // Not valid yet (a clock behind).
        assert_eq!(anchor_verdict(pem.as_bytes(), now - 2 * DAY, warn).0, Verdict::Fail);

        let (leaf, now) = ca(365, false);
        let (v, detail, _) = anchor_verdict(leaf.as_bytes(), now, warn);
        assert_eq!(v, Verdict::Fail);
        assert!(detail.contains("not a CA"), "{detail}");

        for junk in ["", "hello", "-----BEGIN PRIVATE KEY-----\nMAo=\n-----END PRIVATE KEY-----\n"] {
            assert_eq!(anchor_verdict(junk.as_bytes(), now, warn).0, Verdict::Fail, "{junk:?}");
        }
    }

    /// A CA and a leaf it signs for `dns`, valid for `days`.
    fn ca_and_leaf(dns: &str, days: i64) -> (String, String, i64) {
        let now = time::OffsetDateTime::now_utc();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "webhook ca");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut leaf = rcgen::CertificateParams::new(vec![dns.to_owned()]).unwrap();
        leaf.not_before = now - time::Duration::hours(1);
        leaf.not_after = now + time::Duration::days(days) - time::Duration::hours(1);
        let leaf_pem = leaf.signed_by(&rcgen::KeyPair::generate().unwrap(), &issuer).unwrap().pem();
        (ca_pem, leaf_pem, now.unix_timestamp())
    }

    #[test]
    fn serving_verdicts() {
        let warn = Duration::from_secs(30 * DAY as u64);
        let dns = "weft-control.weft.svc";
        let (ca, leaf, now) = ca_and_leaf(dns, 365);
        let (v, detail, _) = serving_verdict(leaf.as_bytes(), ca.as_bytes(), dns, now, warn);
        assert_eq!(v, Verdict::Pass, "{detail}");
        // The chain may carry the CA after the leaf.
        assert_eq!(serving_verdict(format!("{leaf}{ca}").as_bytes(), ca.as_bytes(), dns, now, warn).0, Verdict::Pass);

        let (other_ca, _, _) = ca_and_leaf(dns, 365);
        let (v, detail, _) = serving_verdict(leaf.as_bytes(), other_ca.as_bytes(), dns, now, warn);
        assert_eq!(v, Verdict::Fail);
        assert!(detail.contains("not signed by any certificate of the caBundle"), "{detail}");

        let (v, detail, _) = serving_verdict(leaf.as_bytes(), ca.as_bytes(), "weft-control.other.svc", now, warn);
        assert_eq!(v, Verdict::Fail);
        assert!(detail.contains("not weft-control.other.svc"), "{detail}");

        let (v, detail, _) = serving_verdict(leaf.as_bytes(), ca.as_bytes(), dns, now + 366 * DAY, warn);
        assert_eq!(v, Verdict::Fail);
        assert!(detail.contains("expired"), "{detail}");

        let (ca, leaf, now) = ca_and_leaf(dns, 10);
        let (v, detail, _) = serving_verdict(leaf.as_bytes(), ca.as_bytes(), dns, now, warn);
        assert_eq!(v, Verdict::Warn, "{detail}");
        assert!(detail.contains("in 9 days"), "{detail}");

        assert_eq!(serving_verdict(b"", ca.as_bytes(), dns, now, warn).0, Verdict::Fail);
    }
}
