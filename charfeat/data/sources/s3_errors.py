"""What an S3 failure means for a run: a bad object (left out under ``skip``), a store that cannot
be used at all, or a store that is unavailable for now. Only the first is ever skipped."""

from charfeat.data.sources.base import ImageLoadError

MISSING_CODES = ("NoSuchKey", "404", "NotFound")
DENIED_CODES = ("AccessDenied", "403")  # a HEAD's error has no body: its code is the bare status
CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "NoSuchBucket",
                    "AllAccessDisabled", "InvalidBucketName")


class S3AccessError(ImageLoadError):
    """The bucket cannot be used at all: bad credentials, no permission, no bucket, no endpoint."""


class S3TransientError(ImageLoadError):
    """An object that still failed when its retry budget was spent (throttling, 5xx, timeouts,
    broken bodies): not a bad image, so never skipped; the run stops, naming it."""


def error_code(err: Exception) -> str:
    return (getattr(err, "response", None) or {}).get("Error", {}).get("Code", "?")


def access_error(err: Exception, what: str, endpoint: str) -> S3AccessError | None:
    """A clear error for failures that no retry and no other object fixes; None for the others.

    ``AccessDenied`` is not among them: with ``s3:GetObject`` but no ``s3:ListBucket``, S3 answers
    403 for a key that does not exist, so a 403 concerns that one object."""
    from botocore.exceptions import (ClientError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError,
                                     PartialCredentialsError, ProfileNotFound, ReadTimeoutError)

    if isinstance(err, (NoCredentialsError, PartialCredentialsError, ProfileNotFound)):
        return S3AccessError(f"{what}: no usable AWS credentials ({type(err).__name__}); set "
                             "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, data.profile or an instance role")
    if isinstance(err, (EndpointConnectionError, ConnectTimeoutError)):
        return S3AccessError(f"{what}: cannot reach the S3 endpoint {endpoint} ({type(err).__name__})")
    if isinstance(err, ReadTimeoutError):
        return S3AccessError(f"{what}: the S3 endpoint {endpoint} accepts connections but does not answer "
                             "(ReadTimeoutError after data.read_timeout)")
    if isinstance(err, ClientError) and error_code(err) in CREDENTIAL_CODES:
        return S3AccessError(f"{what}: S3 refused the request ({error_code(err)}); check the credentials from "
                             "boto3's chain (environment, data.profile, instance role), the bucket name and "
                             "its permissions")
    return None
