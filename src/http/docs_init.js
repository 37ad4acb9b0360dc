// Starts Swagger UI on the OpenAPI document the page names (no inline script: the CSP allows none).
window.addEventListener("load", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({ url: root.dataset.specUrl, dom_id: "#swagger-ui" });
});
