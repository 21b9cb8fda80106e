"""Google's and Microsoft's own client libraries against authwire's cloud emulators.

Usage: python check.py DIR   (DIR holds emulators.json, written by the cloud_emulators example)

The emulators are written from the vendors' documentation; this proves that the vendors' own
libraries accept them, so that authwire's tests against them mean something. Every endpoint is
on 127.0.0.1: the libraries are pointed there by their documented environment variables.
"""

import json
import os
import sys
import time

DIR = sys.argv[1]
cfg = json.load(open(os.path.join(DIR, "emulators.json")))
failures = 0


def check(name, fn):
    global failures
    try:
        detail = fn()
        print(f"PASS  {name}{': ' + detail if detail else ''}")
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        failures += 1
        print(f"FAIL  {name}: {type(e).__name__}: {e}")


# ---- Google: google-auth -------------------------------------------------------------------
os.environ["GCE_METADATA_HOST"] = cfg["gcp"]["metadata_host"]
os.environ["GCE_METADATA_IP"] = cfg["gcp"]["metadata_host"]

import google.auth  # noqa: E402
import google.auth.compute_engine  # noqa: E402
import google.auth.identity_pool  # noqa: E402
import google.auth.transport.requests  # noqa: E402
import google.oauth2.credentials  # noqa: E402
import google.oauth2.id_token  # noqa: E402
import google.oauth2.service_account  # noqa: E402

request = google.auth.transport.requests.Request()
CLOUD = ["https://www.googleapis.com/auth/cloud-platform"]


def left(expiry):
    # google-auth keeps naive UTC datetimes.
    import datetime

    return int((expiry - datetime.datetime.utcnow()).total_seconds())


def service_account():
    c = google.oauth2.service_account.Credentials.from_service_account_file(
        cfg["gcp"]["service_account_file"], scopes=CLOUD
    )
    c.refresh(request)
    assert c.token.startswith("ya29."), c.token[:5]
    return f"JWT bearer grant accepted, token for {left(c.expiry)} s"


def authorized_user():
    c = google.oauth2.credentials.Credentials.from_authorized_user_file(cfg["gcp"]["authorized_user_file"])
    # google-auth always uses Google's token endpoint for these files; point it here by name.
    c = c.with_token_uri(cfg["gcp"]["token_url"])
    c.refresh(request)
    assert c.token
    return "refresh grant accepted"


def metadata():
    c = google.auth.compute_engine.Credentials(scopes=CLOUD)
    c.refresh(request)
    assert c.token
    return f"token for {c.service_account_email}"


def metadata_id_token():
    token = google.oauth2.id_token.fetch_id_token(request, "https://hello.a.run.app")
    claims = google.auth.jwt.decode(token, verify=False)
    assert claims["aud"] == "https://hello.a.run.app", claims
    return "ID token with the audience"


def adc():
    creds, _ = google.auth.default(scopes=CLOUD)
    creds.refresh(request)
    return f"google.auth.default() chose {type(creds).__module__}"


def external_account(file):
    def run():
        with open(cfg["gcp"]["subject_token_file"], "w") as f:
            f.write(f"eyJ.interop-subject-{time.time_ns()}.sig")
        c = google.auth.identity_pool.Credentials.from_file(file, scopes=CLOUD)
        c.refresh(request)
        assert c.token
        return "STS exchange" + (" + generateAccessToken" if "sa" in os.path.basename(file) else "")

    return run


def authorized_user_id_token_and_quota_project():
    # Issue 30: the refresh answer's id_token (authwire's AuthorizedUser::id_token reads the same
    # field) and the file's quota_project_id sent as x-goog-user-project.
    c = google.oauth2.credentials.Credentials.from_authorized_user_file(cfg["gcp"]["authorized_user_file"])
    c = c.with_token_uri(cfg["gcp"]["token_url"])
    c.refresh(request)
    claims = google.auth.jwt.decode(c.id_token, verify=False)
    assert claims["aud"] == cfg["gcp"]["user_client_id"], claims
    headers = {}
    c.apply(headers)
    assert headers.get("x-goog-user-project") == "authwire-test", headers
    return "id_token from the refresh grant (aud = the OAuth client); x-goog-user-project from quota_project_id"


def aws():
    # Issue 30: google-auth signs GetCallerIdentity with SigV4; the emulator's STS verifies the
    # signature by recomputing it, as authwire's own tests see it do for authwire's token.
    import google.auth.aws

    g = cfg["gcp"]
    saved = {k: os.environ.get(k) for k in ("AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    os.environ.update(
        AWS_REGION="us-east-2",
        AWS_ACCESS_KEY_ID=g["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=g["aws_secret_access_key"],
        AWS_SESSION_TOKEN=g["aws_session_token"],
    )
    try:
        c = google.auth.aws.Credentials.from_file(g["aws_external_account_file"], scopes=CLOUD)
        c.refresh(request)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert c.token
    return "signed GetCallerIdentity accepted by the emulator's signature check"


def executable():
    # Issue 30: an executable source's documented answer, as authwire's tests' fake programs
    # print it, read by google-auth's pluggable credentials.
    import stat
    import google.auth.pluggable

    program = os.path.join(DIR, "subject-program")
    expires = int(time.time()) + 3600
    with open(program, "w") as f:
        f.write(
            "#!/bin/sh\n"
            f"echo '{{\"version\": 1, \"success\": true, \"token_type\": \"urn:ietf:params:oauth:token-type:jwt\", "
            f"\"id_token\": \"eyJ.pluggable-{time.time_ns()}.sig\", \"expiration_time\": {expires}}}'\n"
        )
    os.chmod(program, stat.S_IRWXU)
    g = cfg["gcp"]
    info = {
        "type": "external_account",
        "audience": g["wif_audience"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": g["sts_url"],
        "credential_source": {"executable": {"command": program, "timeout_millis": 5000}},
    }
    os.environ["GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES"] = "1"
    c = google.auth.pluggable.Credentials.from_info(info, scopes=CLOUD)
    c.refresh(request)
    assert c.token
    return "the documented executable answer, exchanged at the STS"


check("google-auth: service account key (JWT bearer)", service_account)
check("google-auth: authorized_user ID token and quota project", authorized_user_id_token_and_quota_project)
check("google-auth: aws (SigV4 GetCallerIdentity subject token)", aws)
check("google-auth: pluggable (executable source)", executable)
check("google-auth: authorized_user (refresh token)", authorized_user)
check("google-auth: compute_engine.Credentials (metadata server)", metadata)
check("google-auth: fetch_id_token (metadata identity)", metadata_id_token)
check("google-auth: google.auth.default() finds the metadata server", adc)
check("google-auth: identity_pool (workload identity federation)", external_account(cfg["gcp"]["external_account_file"]))
check(
    "google-auth: identity_pool with service account impersonation",
    external_account(cfg["gcp"]["external_account_impersonation_file"]),
)

# ---- Microsoft: azure-identity ---------------------------------------------------------------
from azure.identity import ManagedIdentityCredential  # noqa: E402

ARM = "https://management.azure.com/.default"


def imds():
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET"):
        os.environ.pop(name, None)
    os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = cfg["azure"]["url"]
    t = ManagedIdentityCredential().get_token(ARM)
    assert t.token and t.expires_on > time.time() + 3000, t.expires_on
    return f"IMDS token, expires_on read as {t.expires_on - int(time.time())} s from now"


def imds_user_assigned():
    os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = cfg["azure"]["url"]
    t = ManagedIdentityCredential(client_id=cfg["azure"]["user_assigned_client_id"]).get_token(ARM)
    assert t.token
    return "user-assigned identity by client_id"


def app_service():
    os.environ["IDENTITY_ENDPOINT"] = cfg["azure"]["identity_endpoint"]
    os.environ["IDENTITY_HEADER"] = cfg["azure"]["identity_header"]
    try:
        t = ManagedIdentityCredential().get_token(ARM)
    finally:
        os.environ.pop("IDENTITY_ENDPOINT")
        os.environ.pop("IDENTITY_HEADER")
    assert t.token and t.expires_on > time.time() + 3000
    return "App Service identity endpoint (2019-08-01, X-IDENTITY-HEADER)"


# Entra ID's token endpoint (over TLS: MSAL requires https), trusted through requests' CA bundle.
os.environ["REQUESTS_CA_BUNDLE"] = cfg["azure"]["entra_ca_file"]
from azure.identity import (  # noqa: E402
    CertificateCredential,
    ClientSecretCredential,
    WorkloadIdentityCredential,
)

AZ = cfg["azure"]
ENTRA = dict(authority=AZ["entra_authority"], disable_instance_discovery=True)


def client_secret():
    t = ClientSecretCredential(AZ["tenant_id"], AZ["client_id"], AZ["client_secret"], **ENTRA).get_token(ARM)
    assert t.token
    return "client credentials with the secret, via MSAL and the tenant's discovery document"


def client_certificate():
    t = CertificateCredential(
        AZ["tenant_id"], AZ["client_id"], certificate_path=AZ["client_certificate_file"], **ENTRA
    ).get_token(ARM)
    assert t.token
    return "certificate assertion with x5t"


def client_certificate_pfx_with_chain():
    # Issue 30: a PFX with its password and the chain in x5c, as authwire's
    # ClientCertificate::from_pkcs12_file(..).send_certificate_chain(true) sends it.
    import subprocess

    pfx = os.path.join(DIR, "client.pfx")
    subprocess.run(
        ["openssl", "pkcs12", "-export", "-in", AZ["client_certificate_file"], "-passout", "pass:interop-pfx", "-out", pfx],
        check=True,
        capture_output=True,
    )
    t = CertificateCredential(
        AZ["tenant_id"], AZ["client_id"], certificate_path=pfx, password="interop-pfx", send_certificate_chain=True, **ENTRA
    ).get_token(ARM)
    assert t.token
    return "PFX with its password; x5c accepted"


def workload_identity():
    t = WorkloadIdentityCredential(
        tenant_id=AZ["tenant_id"], client_id=AZ["client_id"], token_file_path=AZ["federated_token_file"], **ENTRA
    ).get_token(ARM)
    assert t.token
    return "federated token file as the client assertion"


def developer_clis():
    # Issue 30: the JSON authwire's tests' fake az and azd print, read by azure-identity's own
    # AzureCliCredential and AzureDeveloperCliCredential.
    import stat
    from azure.identity import AzureCliCredential, AzureDeveloperCliCredential

    bin_dir = os.path.join(DIR, "fake-bin")
    os.makedirs(bin_dir, exist_ok=True)
    fakes = {
        "az": '{"accessToken": "eyJ.az.token", "expiresOn": "2099-01-01 00:00:00.000000", "expires_on": 4070908800, "subscription": "s", "tenant": "t", "tokenType": "Bearer"}',
        "azd": '{"token": "eyJ.azd.token", "expiresOn": "2099-01-01T00:00:00Z"}',
    }
    for name, answer in fakes.items():
        path = os.path.join(bin_dir, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho '{answer}'\n")
        os.chmod(path, stat.S_IRWXU)
    old = os.environ["PATH"]
    os.environ["PATH"] = bin_dir + os.pathsep + "/usr/bin:/bin"
    try:
        az = AzureCliCredential().get_token(ARM)
        azd = AzureDeveloperCliCredential().get_token(ARM)
    finally:
        os.environ["PATH"] = old
    assert az.token == "eyJ.az.token" and az.expires_on == 4070908800, az
    assert azd.token == "eyJ.azd.token" and azd.expires_on == 4070908800, azd
    return "az's and azd's documented JSON read alike (token and expiry)"


check("azure-identity: AzureCliCredential and AzureDeveloperCliCredential", developer_clis)
check("azure-identity: ClientSecretCredential (Entra v2.0 token endpoint)", client_secret)
check("azure-identity: CertificateCredential", client_certificate)
check("azure-identity: CertificateCredential (PFX, send_certificate_chain)", client_certificate_pfx_with_chain)
check("azure-identity: WorkloadIdentityCredential", workload_identity)
check("azure-identity: ManagedIdentityCredential (IMDS)", imds)
check("azure-identity: ManagedIdentityCredential (user-assigned)", imds_user_assigned)
check("azure-identity: ManagedIdentityCredential (App Service)", app_service)

print(
    "cloud emulators: all checks passed with the vendors' libraries"
    if failures == 0
    else f"cloud emulators: {failures} check(s) failed"
)
sys.exit(1 if failures else 0)
