// The interactive API docs: Swagger UI (served from the installed package) over
// /openapi.json. A dashboard session authenticates the docs: its CSRF token is added to
// every request that changes something. Without one, sign in on the dashboard first, or
// use "Authorize" with a bearer token.
"use strict";

(async () => {
  let csrf = null;
  try {
    const r = await fetch("/session", {credentials: "same-origin"});
    if (r.ok) csrf = (await r.json()).csrf;
  } catch (e) { /* not signed in */ }
  const note = document.getElementById("docs-note");
  note.textContent = csrf ? "" :
    "Not signed in: sign in on the dashboard (/) to load the API description.";
  window.ui = SwaggerUIBundle({
    url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: false,
    requestInterceptor: (request) => {
      if (csrf && request.method && request.method !== "GET") {
        request.headers["X-CSRF-Token"] = csrf;
      }
      return request;
    },
  });
})();
