// Render math with the KaTeX copy in assets/katex/ (no CDN). Pages written in
// Markdown reach here as \( ... \) and \[ ... \] (pymdownx.arithmatex, generic
// mode); notebook pages are Markdown too, so the same delimiters apply.
// document$ is Material's page observable, so this also runs after instant
// navigation.
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "\\[", right: "\\]", display: true },
      { left: "\\(", right: "\\)", display: false },
    ],
    ignoredClasses: ["nb-output"],
    throwOnError: false,
  });
});
