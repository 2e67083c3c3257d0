/**
 * How the web edge says no: the HTTP status and Connect error code of each of our status codes (as
 * the Connect protocol maps them), and a one-line JSON body, `{"code": ..., "message": ...}`, the
 * shape of a Connect unary error, for every refusal of our own.
 */
import { type Failure, Status } from "../_util/status.ts";

/** Our status codes as HTTP statuses (Connect's mapping). */
const HTTP_STATUS: Record<Status, number> = {
  [Status.INVALID_ARGUMENT]: 400,
  [Status.PERMISSION_DENIED]: 403,
  [Status.RESOURCE_EXHAUSTED]: 429,
  [Status.FAILED_PRECONDITION]: 400,
  [Status.UNAVAILABLE]: 503,
  [Status.UNAUTHENTICATED]: 401,
};

/** Connect's names of the codes. */
export const CONNECT_CODE: Record<Status, string> = {
  [Status.INVALID_ARGUMENT]: "invalid_argument",
  [Status.PERMISSION_DENIED]: "permission_denied",
  [Status.RESOURCE_EXHAUSTED]: "resource_exhausted",
  [Status.FAILED_PRECONDITION]: "failed_precondition",
  [Status.UNAVAILABLE]: "unavailable",
  [Status.UNAUTHENTICATED]: "unauthenticated",
};

/** A refusal: `status`, with `code` and `message` in a JSON body. */
export function refusal(status: number, code: string, message: string, headers: HeadersInit = {}): Response {
  return Response.json({ code, message }, { status, headers });
}

/** What every 401 says (RFC 6750), whoever wrote it (the Connect router writes its own). */
export const WWW_AUTHENTICATE = 'Bearer realm="notification-server"';

/** A core failure as a response. */
export function failureResponse(failure: Failure): Response {
  return refusal(HTTP_STATUS[failure.code], CONNECT_CODE[failure.code], failure.details);
}
