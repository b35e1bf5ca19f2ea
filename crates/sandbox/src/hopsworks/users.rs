//! The admin API's users: create (with Hopsworks' generated usernames), list (paged, sorted,
//! filtered), get by id or UUID, and update (status, names, max projects).

use super::*;

/// Hopsworks usernames: up to three lowercase letters from the email's local part (the name
/// when it has none) and the first free number from 10000, e.g. `meb10000`.
fn generate_username(state: &State, email: &str, given_name: &str, surname: &str) -> String {
    let letters =
        |s: &str| s.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase()).collect::<String>();
    let local = email.split('@').next().unwrap_or_default();
    let mut prefix: String = letters(local).chars().take(3).collect();
    if prefix.is_empty() {
        prefix = letters(&format!("{given_name}{surname}")).chars().take(3).collect();
    }
    if prefix.is_empty() {
        "usr".clone_into(&mut prefix);
    }
    let mut n = FIRST_USERNAME_NUMBER;
    loop {
        let candidate = format!("{prefix}{n}");
        if !state.users.iter().any(|u| u.username == candidate) {
            return candidate;
        }
        n += 1;
    }
}

pub(super) async fn create_user(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    serve(&data, &req, &body, Some(Route::CreateUser), |inner, _| {
        let params = query_params(&req)?;
        let Some(account_type) = param(&params, "accountType") else {
            return Err(HopsworksError::new(422, code::ACCOUNT_TYPE_NOT_PROVIDED, "Account type not provided.")
                .user("Account type not provided"));
        };
        if account_type != "REMOTE_ACCOUNT_TYPE" {
            return Err(HopsworksError::illegal_argument("Only remote accounts can be created by an administrator"));
        }
        if param(&params, "type") != Some("OAUTH2") {
            return Err(HopsworksError::illegal_argument("Remote user type not provided or not supported"));
        }
        let required = |name: &str| {
            param(&params, name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| HopsworksError::illegal_argument(&format!("{name} not provided")))
        };
        let email = required("email")?;
        let given_name = required("givenName")?;
        let surname = required("surname")?;
        let subject = required("subject")?;
        let client_id = required("clientId")?;
        if !email.contains('@') {
            return Err(HopsworksError::illegal_argument("Invalid email"));
        }
        // A negative or missing limit takes the cluster's default.
        let max_num_projects = numeric_param::<i64>(&params, "maxNumProjects")?
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_NUM_PROJECTS);
        if client_id != inner.config.oauth_client_id {
            return Err(HopsworksError::new(400, code::OAUTH_CLIENT_NOT_FOUND, "OAuth client not found."));
        }
        let uuid = format!("{client_id}.{subject}");
        let mut state = lock(&inner.state);
        if state.users.iter().any(|u| u.email.eq_ignore_ascii_case(email) || u.uuid.as_deref() == Some(&uuid)) {
            return Err(HopsworksError::new(409, code::USER_EXISTS, "User already exists.")
                .user("There is an existing account associated with this email"));
        }
        let username = generate_username(&state, email, given_name, surname);
        let id = state.users.last().map_or(FIRST_USER_ID, |u| u.id + 1);
        state.users.push(User {
            id,
            username: username.clone(),
            email: email.to_owned(),
            given_name: given_name.to_owned(),
            surname: surname.to_owned(),
            account_type: "REMOTE_ACCOUNT_TYPE".to_owned(),
            status: STATUS_ACTIVATED,
            max_num_projects,
            num_created_projects: 0,
            uuid: Some(uuid.clone()),
            activated: Utc::now(),
        });
        for (owner, project) in inner.config.projects_on_signup.iter().filter(|(owner, _)| *owner == username) {
            // The habit may outrun the limit or repeat a name; the account is made either way.
            let _made = create_project(&mut state, owner, project);
        }
        Ok(HttpResponse::Created().json(json!({
            "uuid": uuid,
            "givenName": given_name,
            "surname": surname,
            "email": email,
            "username": username,
        })))
    })
    .await
}

fn sort_key(sort_by: &str) -> Result<(String, bool), HopsworksError> {
    let (field, order) = sort_by.split_once(':').unwrap_or((sort_by, "asc"));
    let descending = match order.to_ascii_lowercase().as_str() {
        "asc" => false,
        "desc" => true,
        _ => return Err(HopsworksError::illegal_argument("Sort order must be asc or desc")),
    };
    Ok((field.to_ascii_lowercase(), descending))
}

pub(super) async fn list_users(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    serve(&data, &req, &body, Some(Route::ListUsers), |inner, _| {
        let params = query_params(&req)?;
        let offset = numeric_param::<usize>(&params, "offset")?.unwrap_or(0);
        let limit = numeric_param::<usize>(&params, "limit")?;
        let state = lock(&inner.state);
        let mut users: Vec<&User> = state.users.iter().collect();
        for (_, filter) in params.iter().filter(|(k, _)| k == "filter_by") {
            let (field, value) = filter.split_once(':').unwrap_or((filter, ""));
            match field.to_ascii_lowercase().as_str() {
                "type" => {
                    let wanted = value.to_ascii_uppercase();
                    users.retain(|u| u.account_type == wanted);
                }
                "status" => {
                    let status: u8 = value.parse().map_err(|_| HopsworksError::illegal_argument("Invalid status"))?;
                    users.retain(|u| u.status == status);
                }
                "user_like" => {
                    let needle = value.to_lowercase();
                    users.retain(|u| {
                        [&u.username, &u.email, &u.given_name, &u.surname]
                            .iter()
                            .any(|f| f.to_lowercase().contains(&needle))
                    });
                }
                _ => return Err(HopsworksError::illegal_argument("Filter by need to set a valid filter parameter")),
            }
        }
        if let Some(sort_by) = param(&params, "sort_by") {
            let (field, descending) = sort_key(sort_by)?;
            match field.as_str() {
                "email" => users.sort_by_key(|u| u.email.to_lowercase()),
                "first_name" => users.sort_by(|a, b| a.given_name.cmp(&b.given_name)),
                "last_name" => users.sort_by(|a, b| a.surname.cmp(&b.surname)),
                "date_created" => users.sort_by_key(|u| (u.activated, u.id)),
                _ => return Err(HopsworksError::illegal_argument("Sort by need to set a valid sort parameter")),
            }
            if descending {
                users.reverse();
            }
        }
        let count = users.len();
        let base = base_url(&req);
        let items: Vec<Value> = users
            .into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .map(|u| user_json(&base, &state, u))
            .collect();
        let mut answer = json!({ "href": format!("{base}/admin/users"), "count": count });
        if !items.is_empty()
            && let Some(map) = answer.as_object_mut()
        {
            map.insert("items".to_owned(), Value::Array(items));
        }
        Ok(HttpResponse::Ok().json(answer))
    })
    .await
}

fn user_id(req: &HttpRequest) -> Result<u64, HopsworksError> {
    req.match_info().get("id").and_then(|id| id.parse().ok()).ok_or_else(HopsworksError::unconvertible_param)
}

pub(super) async fn get_user(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    serve(&data, &req, &body, Some(Route::GetUser), |inner, _| {
        let id = user_id(&req)?;
        let state = lock(&inner.state);
        let user = state.users.iter().find(|u| u.id == id).ok_or_else(HopsworksError::user_not_found)?;
        Ok(HttpResponse::Ok().json(user_json(&base_url(&req), &state, user)))
    })
    .await
}

pub(super) async fn get_user_by_uuid(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    serve(&data, &req, &body, Some(Route::GetUserByUuid), |inner, _| {
        let uuid = req.match_info().get("uuid").unwrap_or_default();
        let state = lock(&inner.state);
        let user =
            state.users.iter().find(|u| u.uuid.as_deref() == Some(uuid)).ok_or_else(HopsworksError::user_not_found)?;
        Ok(HttpResponse::Ok().json(json!({
            "uuid": uuid,
            "givenName": user.given_name,
            "surname": user.surname,
            "email": user.email,
        })))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserUpdate {
    max_num_projects: Option<i64>,
    status: Option<Value>,
}

pub(super) async fn update_user(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    serve(&data, &req, &body, Some(Route::UpdateUser), |inner, _| {
        let id = user_id(&req)?;
        require_json(&req)?;
        let update: UserUpdate =
            serde_json::from_slice(&body).map_err(|_| HopsworksError::illegal_argument("Malformed JSON body"))?;
        let max_num_projects = update
            .max_num_projects
            .map(|n| {
                u32::try_from(n).map_err(|_| HopsworksError::illegal_argument("maxNumProjects must not be negative"))
            })
            .transpose()?;
        let status = update
            .status
            .map(|s| match s.as_u64() {
                Some(s @ 0..=7) => Ok(u8::try_from(s).unwrap_or(STATUS_ACTIVATED)),
                _ => Err(HopsworksError::new(400, code::INVALID_STATUS, "Invalid status.").user("Status not valid")),
            })
            .transpose()?;
        if max_num_projects.is_none() && status.is_none() {
            return Err(HopsworksError::illegal_argument("Nothing to update"));
        }
        let mut state = lock(&inner.state);
        let user = state.users.iter_mut().find(|u| u.id == id).ok_or_else(HopsworksError::user_not_found)?;
        if let Some(n) = max_num_projects {
            user.max_num_projects = n;
        }
        if let Some(s) = status {
            user.status = s;
        }
        let user = user.clone();
        Ok(HttpResponse::Ok().json(user_json(&base_url(&req), &state, &user)))
    })
    .await
}
