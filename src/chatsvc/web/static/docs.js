// /docs: the packaged Swagger UI showing this server's own /openapi.json, and nothing fetched
// from anywhere else (no validator badge, no top bar to load other documents).
const root = document.getElementById("swagger-ui");
window.SwaggerUIBundle({
  url: root.dataset.url,
  domNode: root,
  validatorUrl: null,
  deepLinking: true,
  tryItOutEnabled: false,
  layout: "BaseLayout",
});
