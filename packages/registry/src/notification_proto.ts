/**
 * `proto/notification.proto`, embedded, so that the client works wherever the package is loaded
 * from (a link, a compiled binary, or a registry over https, where no file can be read beside the
 * module). The .proto file stays the one the service serves and reflection describes;
 * notification_proto_test.ts fails when the two differ.
 */
export const NOTIFICATION_PROTO: string = `syntax = "proto3";

package notification.v1;

// Delivers notifications to live subscribers of a recipient on this instance.
service NotificationService {
  // Validates and delivers one notification to the recipient's live subscribers.
  rpc Send(SendRequest) returns (SendResponse);
  // Streams notifications for one recipient until the client cancels or the server shuts down.
  rpc Subscribe(SubscribeRequest) returns (stream Notification);
}

message SendRequest {
  string recipient = 1;
  string title = 2;
  string body = 3;
  map<string, string> data = 4;
}

message SendResponse {
  string id = 1;
  // Milliseconds since the Unix epoch, assigned by the server.
  int64 created_at_ms = 2;
  // How many live subscribers on this instance received it.
  uint32 delivered = 3;
  // The instance that handled the call.
  string instance_id = 4;
}

message SubscribeRequest {
  string recipient = 1;
}

message Notification {
  string id = 1;
  string recipient = 2;
  string title = 3;
  string body = 4;
  map<string, string> data = 5;
  int64 created_at_ms = 6;
}
`;
