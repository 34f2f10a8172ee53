// Render math with the KaTeX copy in assets/katex/ (no CDN). Pages written in
// Markdown reach here as \( ... \) and \[ ... \] (pymdownx.arithmatex, generic
// mode). Notebook pages (mkdocs-jupyter) keep the $ ... $ and $$ ... $$ of
// their Markdown cells, as Jupyter does: those delimiters apply there only,
// and never to code or outputs. document$ is Material's page observable, so
// this also runs after instant navigation.
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "\\[", right: "\\]", display: true },
      { left: "\\(", right: "\\)", display: false },
    ],
    ignoredClasses: ["nb-output", "jp-OutputArea", "jp-InputArea"],
    throwOnError: false,
  });
  for (const cell of body.querySelectorAll(".jp-MarkdownCell")) {
    renderMathInElement(cell, {
      delimiters: [
        { left: "$$", right: "$$", display: true },
        { left: "$", right: "$", display: false },
      ],
      throwOnError: false,
    });
  }
});
