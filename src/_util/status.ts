/**
 * The status codes our answers carry, whatever the transport: the canonical codes of gRPC (the same
 * numbers), which Connect names the same way and the HTTP edge maps to HTTP statuses.
 */
export const Status = {
  INVALID_ARGUMENT: 3,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

export type Status = (typeof Status)[keyof typeof Status];

/** A call that did not go ahead: its status and a one-line reason. */
export interface Failure {
  code: Status;
  details: string;
}
