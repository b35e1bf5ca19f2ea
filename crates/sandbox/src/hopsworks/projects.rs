//! The admin API's projects: list (with `expand=creator` and `expand=quotas`), add a user to
//! projects, and the projects the simulation makes.

use super::*;

/// Whether the query asks to expand `what` (`expand=creator&expand=quotas` or
/// `expand=creator,quotas`).
fn expands(query: &str, what: &str) -> bool {
    web::Query::<Vec<(String, String)>>::from_query(query).is_ok_and(|params| {
        params.iter().any(|(k, v)| k == "expand" && v.split(',').any(|e| e.trim().eq_ignore_ascii_case(what)))
    })
}

pub(super) async fn list_projects(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    // Reading the quotas is its own target of faults, so a storage read can fail while the
    // plain list answers.
    let expand_quotas = expands(req.query_string(), "quotas");
    let route = if expand_quotas { Route::ProjectQuotas } else { Route::ListProjects };
    serve(&data, &req, &body, Some(route), |inner, _| {
        let params = query_params(&req)?;
        let offset = numeric_param::<usize>(&params, "offset")?.unwrap_or(0);
        let limit = numeric_param::<usize>(&params, "limit")?;
        let expand_creator = expands(req.query_string(), "creator");
        let base = base_url(&req);
        let now = inner.now();
        let state = lock(&inner.state);
        let items: Vec<Value> = state
            .projects
            .iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .map(|p| {
                let href = format!("{base}/users/{}", p.owner_id);
                let creator = match state.users.iter().find(|u| u.id == p.owner_id) {
                    Some(u) if expand_creator => json!({
                        "href": href,
                        "username": u.username,
                        "email": u.email,
                        "firstname": u.given_name,
                        "lastname": u.surname,
                    }),
                    _ => json!({ "href": href }),
                };
                let mut item = json!({
                    "href": format!("{base}/admin/projects/{}", p.id),
                    "id": p.id,
                    "name": p.name,
                    "namespace": p.namespace,
                    "created": timestamp_secs(p.created),
                    "creator": creator,
                });
                if expand_quotas && let Some(map) = item.as_object_mut() {
                    let held = state.storage.get(&p.id).map_or_else(ProjectStorage::empty, |t| t.at(now));
                    map.insert("projectQuotas".to_owned(), storage::quotas_json(&held));
                }
                item
            })
            .collect();
        let mut answer = json!({ "href": format!("{base}/admin/projects"), "count": state.projects.len() });
        if !items.is_empty()
            && let Some(map) = answer.as_object_mut()
        {
            map.insert("items".to_owned(), Value::Array(items));
        }
        Ok(HttpResponse::Ok().json(answer))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddToProjects {
    username: String,
    role: String,
    project_ids: Vec<u64>,
}

pub(super) async fn add_to_projects(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    serve(&data, &req, &body, Some(Route::AddToProjects), |inner, _| {
        require_json(&req)?;
        let add: AddToProjects =
            serde_json::from_slice(&body).map_err(|_| HopsworksError::illegal_argument("Malformed JSON body"))?;
        if ![ROLE_DATA_OWNER, ROLE_DATA_SCIENTIST, ROLE_OBSERVER].contains(&add.role.as_str()) {
            return Err(HopsworksError::new(400, code::ROLE_NOT_FOUND, "Role not found.").user("Invalid project role"));
        }
        if add.project_ids.is_empty() {
            return Err(HopsworksError::illegal_argument("No project ids provided"));
        }
        let mut state = lock(&inner.state);
        if !state.users.iter().any(|u| u.username == add.username) {
            return Err(HopsworksError::user_not_found());
        }
        if let Some(missing) = add.project_ids.iter().find(|id| !state.projects.iter().any(|p| p.id == **id)) {
            return Err(project_not_found().user(&format!("Project {missing} wasn't found")));
        }
        for project_id in add.project_ids {
            // Members already in a project keep their role, so a retried request changes nothing.
            if !state.memberships.iter().any(|m| m.project_id == project_id && m.username == add.username) {
                state.memberships.push(Membership {
                    project_id,
                    username: add.username.clone(),
                    role: add.role.clone(),
                    added: Utc::now(),
                });
            }
        }
        Ok(HttpResponse::Ok().finish())
    })
    .await
}

/// Creates a project as `owner_username` does in the Hopsworks UI (see
/// [`HopsworksSim::create_project`]).
pub(super) fn create_project(state: &mut State, owner_username: &str, name: &str) -> Result<Project, HopsworksError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphabetic());
    if !valid {
        return Err(HopsworksError::new(400, code::PROJECT_NAME_INVALID, "Invalid project name."));
    }
    if state.projects.iter().any(|p| p.name.eq_ignore_ascii_case(name)) {
        return Err(HopsworksError::new(409, code::PROJECT_EXISTS, "Project with the same name already exists."));
    }
    let owner =
        state.users.iter_mut().find(|u| u.username == owner_username).ok_or_else(HopsworksError::user_not_found)?;
    if owner.num_created_projects >= owner.max_num_projects {
        return Err(HopsworksError::new(
            400,
            code::NUM_PROJECTS_LIMIT,
            "The user has reached the maximum number of projects they can create.",
        ));
    }
    owner.num_created_projects += 1;
    let owner_id = owner.id;
    let id = state.projects.last().map_or(FIRST_PROJECT_ID, |p| p.id + 1);
    let project = Project {
        id,
        name: name.to_owned(),
        namespace: name.to_ascii_lowercase().replace('_', "-"),
        created: Utc::now(),
        owner_id,
    };
    state.projects.push(project.clone());
    state.memberships.push(Membership {
        project_id: id,
        username: owner_username.to_owned(),
        role: ROLE_DATA_OWNER.to_owned(),
        added: Utc::now(),
    });
    Ok(project)
}
