/**
 * The built-in page (`GET /`, `notification-server.http.page`): follow a recipient with EventSource
 * and send to it with the Connect protocol's JSON form, as any page may. Part of the binary, no
 * build step. Element ids are what tests/web_browser_test.ts drives.
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>notification-server</title>
<style>
body { font: 15px system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
fieldset { border: 1px solid #ccc; margin-bottom: 1rem; }
label { display: block; margin: .3rem 0; }
input { width: 100%; box-sizing: border-box; }
#log li { font-family: monospace; margin: .2rem 0; }
#state { font-weight: bold; }
</style>
</head>
<body>
<h1>notification-server</h1>
<fieldset>
<legend>Follow</legend>
<label>Recipient <input id="recipient" value="alice"></label>
<label>Token (when auth is on) <input id="token" type="password" autocomplete="off"></label>
<button id="follow">Follow</button> <span id="state">not following</span>
</fieldset>
<fieldset>
<legend>Send</legend>
<label>Title <input id="title" value="hello"></label>
<label>Body <input id="body" value="from the built-in page"></label>
<button id="send">Send</button> <span id="sent"></span>
</fieldset>
<h2>Notifications</h2>
<ol id="log"></ol>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let source;
$("follow").onclick = () => {
  if (source) source.close();
  const recipient = $("recipient").value;
  const token = $("token").value;
  const query = token ? "?access_token=" + encodeURIComponent(token) : "";
  source = new EventSource("/v1/recipients/" + encodeURIComponent(recipient) + "/events" + query);
  $("state").textContent = "connecting";
  source.onopen = () => $("state").textContent = "following " + recipient;
  source.onerror = () => $("state").textContent = source.readyState === EventSource.CLOSED ? "refused (see the server's answer)" : "reconnecting";
  source.onmessage = (event) => {
    const n = JSON.parse(event.data);
    const item = document.createElement("li");
    item.textContent = (n.title ?? "") + ": " + (n.body ?? "") + (event.lastEventId ? " [" + event.lastEventId + "]" : "");
    $("log").append(item);
  };
  source.addEventListener("recovery", (event) => {
    const r = JSON.parse(event.data);
    if (!r.recovered) $("state").textContent = "resumed, but some notifications were no longer kept";
  });
};
$("send").onclick = async () => {
  const token = $("token").value;
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = "Bearer " + token;
  const response = await fetch("/notification.v1.NotificationService/Send", {
    method: "POST",
    headers,
    body: JSON.stringify({ recipient: $("recipient").value, title: $("title").value, body: $("body").value }),
  });
  const answer = await response.json();
  $("sent").textContent = response.ok ? "sent (" + (answer.delivered ?? 0) + " delivered)" : response.status + " " + answer.message;
};
</script>
</body>
</html>
`;
